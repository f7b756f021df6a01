use super::*;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

fn env(vars: &[(&str, String)]) -> EnvFn {
    let m: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Arc::new(move |k: &str| m.get(k).cloned())
}

fn basic(u: &str, p: &str) -> Credential {
    Credential::Basic {
        username: u.into(),
        password: p.into(),
    }
}

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[test]
fn docker_config_auths_with_hub_and_scheme_keys() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".docker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"https://127.0.0.1:5000/v2/":{{"username":"bob","password":"pw"}},"ghcr.io":{{"identitytoken":"rt"}},"quay.example":{{"registrytoken":"tok"}}}}}}"#,
            b64("alice:secret")
        ),
    )
    .unwrap();
    let s = CredentialStore::with_env(
        CredentialOptions::default(),
        env(&[("HOME", home.path().display().to_string())]),
    );
    assert_eq!(
        s.resolve("docker.io", "library/x").unwrap(),
        Some(basic("alice", "secret"))
    );
    assert_eq!(
        s.resolve("127.0.0.1:5000", "m").unwrap(),
        Some(basic("bob", "pw"))
    );
    assert_eq!(
        s.resolve("ghcr.io", "m").unwrap(),
        Some(Credential::IdentityToken("rt".into()))
    );
    assert_eq!(
        s.resolve("quay.example", "m").unwrap(),
        Some(Credential::RegistryToken("tok".into()))
    );
    assert_eq!(s.resolve("other.example", "m").unwrap(), None);
}

#[test]
fn precedence_explicit_env_registry_config_authfile_docker_podman() {
    let t = tempfile::tempdir().unwrap();
    let write = |name: &str, key: &str, user: &str| {
        let p = t.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(
            &p,
            format!(
                r#"{{"auths":{{"{key}":{{"auth":"{}"}}}}}}"#,
                b64(&format!("{user}:pw"))
            ),
        )
        .unwrap();
        p
    };
    let docker_dir = t.path().join("docker");
    write("docker/config.json", "r.example", "docker");
    let oras = write("oras.json", "r.example", "oras");
    let podman = write("auth.json", "r.example/team", "podman-ns");
    write("xdg/containers/auth.json", "r.example", "podman-default");
    let base = CredentialOptions {
        docker_config_dir: Some(docker_dir.clone()),
        ..Default::default()
    };
    let e = env(&[(
        "XDG_RUNTIME_DIR",
        t.path().join("xdg").display().to_string(),
    )]);
    let who = |opts: CredentialOptions, e: EnvFn| match CredentialStore::with_env(opts, e)
        .resolve("r.example", "team/model")
        .unwrap()
    {
        Some(Credential::Basic { username, .. }) => username,
        other => panic!("{other:?}"),
    };
    assert_eq!(who(base.clone(), e.clone()), "docker");
    assert_eq!(
        who(
            CredentialOptions {
                authfile: Some(podman.clone()),
                ..base.clone()
            },
            e.clone()
        ),
        "podman-ns"
    );
    assert_eq!(
        who(
            CredentialOptions {
                registry_configs: vec![oras.clone()],
                authfile: Some(podman.clone()),
                ..base.clone()
            },
            e.clone()
        ),
        "oras"
    );
    let env_json = format!(
        r#"{{"auths":{{"r.example":{{"auth":"{}"}}}}}}"#,
        b64("envuser:pw")
    );
    let e2 = env(&[("DOCKER_AUTH_CONFIG", env_json)]);
    assert_eq!(
        who(
            CredentialOptions {
                registry_configs: vec![oras],
                ..base.clone()
            },
            e2
        ),
        "envuser"
    );
    assert_eq!(
        who(
            CredentialOptions {
                explicit: Some(basic("flag", "x")),
                ..base.clone()
            },
            e.clone()
        ),
        "flag"
    );
    let no_docker = CredentialOptions {
        docker_config_dir: Some(t.path().join("none")),
        ..Default::default()
    };
    assert_eq!(who(no_docker, e), "podman-default");
}

#[test]
fn podman_namespace_keys_most_specific_first() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("auth.json");
    std::fs::write(&p, format!(r#"{{"auths":{{"quay.io":{{"auth":"{}"}},"quay.io/org":{{"auth":"{}"}},"quay.io/org/repo":{{"auth":"{}"}}}}}}"#, b64("host:p"), b64("org:p"), b64("repo:p"))).unwrap();
    let s = CredentialStore::with_env(
        CredentialOptions {
            authfile: Some(p),
            docker_config_dir: Some(t.path().join("x")),
            ..Default::default()
        },
        env(&[]),
    );
    assert_eq!(
        s.resolve("quay.io", "org/repo").unwrap(),
        Some(basic("repo", "p"))
    );
    assert_eq!(
        s.resolve("quay.io", "org/other").unwrap(),
        Some(basic("org", "p"))
    );
    assert_eq!(
        s.resolve("quay.io", "else/x").unwrap(),
        Some(basic("host", "p"))
    );
}

#[test]
fn login_writes_0600_preserves_keys_and_logout_erases() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"currentContext":"default","plugins":{"modelpack":{"x":1}}}"#,
    )
    .unwrap();
    let s = CredentialStore::with_env(
        CredentialOptions {
            docker_config_dir: Some(t.path().into()),
            ..Default::default()
        },
        env(&[]),
    );
    assert_eq!(
        s.store("docker.io", &basic("alice", "secret")).unwrap(),
        StoredIn::ConfigFile(cfg.clone())
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert_eq!(doc["currentContext"], "default");
    assert_eq!(doc["plugins"]["modelpack"]["x"], 1);
    assert_eq!(
        doc["auths"]["https://index.docker.io/v1/"]["auth"],
        b64("alice:secret")
    );
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        s.resolve("docker.io", "library/x").unwrap(),
        Some(basic("alice", "secret"))
    );
    assert!(s.erase("docker.io").unwrap());
    assert_eq!(s.resolve("docker.io", "library/x").unwrap(), None);
    assert!(!s.erase("docker.io").unwrap());
}

#[test]
fn debug_output_never_contains_secrets() {
    let all = [
        basic("alice", "hunter2"),
        Credential::IdentityToken("hunter2".into()),
        Credential::RegistryToken("hunter2".into()),
    ];
    for c in all {
        assert!(!format!("{c:?} {c}").contains("hunter2"));
    }
}

#[test]
fn malformed_files_name_the_file() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("config.json"),
        r#"{"auths":{"x":{"auth":"!!!"}}}"#,
    )
    .unwrap();
    let s = CredentialStore::with_env(
        CredentialOptions {
            docker_config_dir: Some(t.path().into()),
            ..Default::default()
        },
        env(&[]),
    );
    let e = s.resolve("x", "r").unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("base64"), "{e}");
}

#[test]
fn debug_output_never_contains_a_secret() {
    let secrets = ["hunter2-pw", "refresh-tok-42", "bearer-tok-43", "idtok-44"];
    let json = format!(
        r#"{{"auths":{{"a.example":{{"auth":"{}"}},"b.example":{{"username":"bob","password":"{}"}},"c.example":{{"identitytoken":"{}"}},"d.example":{{"registrytoken":"{}"}}}}}}"#,
        b64(&format!("alice:{}", secrets[0])),
        secrets[0],
        secrets[1],
        secrets[2]
    );
    let f = AuthFile::parse(json.as_bytes(), "test").unwrap();
    let creds = [
        basic("alice", secrets[0]),
        Credential::IdentityToken(secrets[3].into()),
        Credential::RegistryToken(secrets[2].into()),
    ];
    let opts = CredentialOptions {
        explicit: Some(basic("alice", secrets[0])),
        ..Default::default()
    };
    let mut outputs = vec![format!("{f:?}"), format!("{opts:?}")];
    outputs.extend(creds.iter().map(|c| format!("{c:?} {c}")));
    let encoded = b64(&format!("alice:{}", secrets[0]));
    for out in &outputs {
        for s in secrets.iter().chain([&encoded.as_str()]) {
            assert!(!out.contains(s), "{s} leaked in {out}");
        }
    }
    // Still useful: the non-secret parts are there.
    assert!(outputs[0].contains("b.example") && outputs[0].contains("bob"));
    assert!(outputs[2].contains("alice"));
}
