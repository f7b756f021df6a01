//! Property tests for the parsers that read what other people wrote:
//! manifests and configs from registries, references typed or stored,
//! extraction paths from annotations, hosts.toml, and credential files.
//! Each asserts "no panic" plus a property a broken parser would violate.

use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use modelpack_common::config::ModelConfig;
use modelpack_common::credentials::{Credential, CredentialOptions, CredentialStore};
use modelpack_common::extract::safe_relative_path;
use modelpack_common::manifest::{Descriptor, Manifest};
use modelpack_common::registry::HostsConfig;
use modelpack_common::{Digest, Reference};
use proptest::prelude::*;

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 4]>().prop_map(|b| Digest::of(&b))
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(any::<String>(), any::<String>(), 0..4)
}

fn descriptor() -> impl Strategy<Value = Descriptor> {
    (any::<String>(), digest(), any::<u64>(), annotations()).prop_map(|(mt, d, size, a)| {
        let mut desc = Descriptor::new(mt, d, size);
        desc.annotations = a;
        desc
    })
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        descriptor(),
        prop::collection::vec(descriptor(), 0..5),
        prop::option::of(any::<String>()),
        annotations(),
    )
        .prop_map(|(config, layers, at, annotations)| {
            let mut m = Manifest::model(modelpack_common::media::Family::Cncf, config, layers);
            m.artifact_type = at;
            m.annotations = annotations;
            m
        })
}

/// JSON-ish noise: fragments of manifest syntax glued together at random.
fn json_noise() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        prop::collection::vec(
            prop_oneof![
                Just("{".to_string()),
                Just("}".to_string()),
                Just("[".to_string()),
                Just("]".to_string()),
                Just(",".to_string()),
                Just(":".to_string()),
                Just("\"schemaVersion\"".to_string()),
                Just("\"layers\"".to_string()),
                Just("\"size\"".to_string()),
                Just("18446744073709551616".to_string()),
                Just("-1".to_string()),
                Just("\"sha256:\"".to_string()),
                Just("\"modelfs\"".to_string()),
                Just("\"diffIds\"".to_string()),
                "\"[^\"]{0,8}\"",
                "[0-9]{1,20}",
            ],
            0..40,
        )
        .prop_map(|v| v.concat().into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A manifest we write parses back to itself, its bytes are a fixed
    /// point, and the displayed total saturates whatever the sizes claim.
    #[test]
    fn manifest_round_trips(m in manifest()) {
        let bytes = m.to_bytes();
        let back = Manifest::parse(&bytes, "m").unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.to_bytes(), bytes);
        let naive: u128 = u128::from(m.config.size)
            + m.layers.iter().map(|l| u128::from(l.size)).sum::<u128>();
        prop_assert_eq!(u128::from(m.content_size()), naive.min(u128::from(u64::MAX)));
    }

    /// Hostile bytes: parse never panics; whatever parses re-serialises to
    /// something that parses to the same value.
    #[test]
    fn manifest_and_config_parse_noise(b in json_noise()) {
        if let Ok(m) = Manifest::parse(&b, "m") {
            prop_assert_eq!(Manifest::parse(&m.to_bytes(), "again").unwrap(), m.clone());
            let _ = m.content_size();
            for l in &m.layers {
                let _ = (l.filepath(), l.file_metadata(), l.layer_type());
            }
        }
        if let Ok(c) = ModelConfig::parse(&b, "c") {
            prop_assert_eq!(ModelConfig::parse(&c.to_bytes(), "again").unwrap(), c);
        }
        let _ = modelpack_common::manifest::sniff_media_type(&b);
    }

    /// Structured configs with arbitrary strings round-trip.
    #[test]
    fn config_round_trips(
        name in prop::option::of(any::<String>()),
        arch in prop::option::of(any::<String>()),
        licenses in prop::option::of(prop::collection::vec(any::<String>(), 0..3)),
        diff_ids in prop::collection::vec(digest(), 0..4),
    ) {
        let mut c = ModelConfig::default();
        c.descriptor.name = name;
        c.descriptor.licenses = licenses;
        c.config.architecture = arch;
        c.modelfs.diff_ids = diff_ids;
        prop_assert_eq!(ModelConfig::parse(&c.to_bytes(), "c").unwrap(), c);
    }

    /// Whatever parses as a reference is normalised once and for all:
    /// its display form parses back to the same reference.
    #[test]
    fn reference_normalisation_is_idempotent(s in prop_oneof![
        any::<String>(),
        "([a-z0-9]{1,6}(\\.[a-z]{2,3})?(:[0-9]{1,5})?/)?[a-z0-9]{1,5}([._-][a-z0-9]{1,3})?(/[a-z0-9]{1,5}){0,2}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,8})?",
        "[a-zA-Z0-9:/@._\\[\\]-]{0,30}",
    ]) {
        if let Ok(r) = s.parse::<Reference>() {
            let again: Reference = r.to_string().parse().map_err(|e| {
                TestCaseError::fail(format!("{s:?} -> {r} does not re-parse: {e}"))
            })?;
            prop_assert_eq!(&again, &r);
            prop_assert!(!r.repository.is_empty());
            prop_assert!(r.tag.as_ref().is_none_or(|t| !t.is_empty() && t.len() <= 128));
        }
    }

    /// Extraction paths: an accepted path is relative, non-empty and made of
    /// normal components only; a plain relative path is always accepted.
    #[test]
    fn safe_relative_path_invariants(
        parts in prop::collection::vec(prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just(String::new()),
            Just("a".to_string()),
            Just("模型".to_string()),
            Just("\\".to_string()),
            Just("\0".to_string()),
            Just("..a".to_string()),
            Just("/".to_string()),
            "[^/]{1,5}",
        ], 0..6),
        lead in prop_oneof![Just(""), Just("/"), Just("./"), Just("//")],
    ) {
        let p = format!("{lead}{}", parts.join("/"));
        match safe_relative_path("layer", &p) {
            Ok(rel) => {
                prop_assert!(!rel.as_os_str().is_empty());
                prop_assert!(rel.is_relative());
                prop_assert!(
                    rel.components().all(|c| matches!(c, Component::Normal(_))),
                    "{rel:?}"
                );
                prop_assert!(Path::new("/out").join(&rel).starts_with("/out"));
                prop_assert!(!p.contains('\0') && !p.contains('\\') && !p.starts_with('/'));
            }
            Err(e) => {
                prop_assert!(e.to_string().contains("layer"), "{e}");
                let plain = !p.starts_with('/')
                    && !p.contains('\0')
                    && !p.contains('\\')
                    && p.split('/').all(|c| c != "..")
                    && p.split('/').any(|c| !c.is_empty() && c != ".");
                prop_assert!(!plain, "{p:?} refused: {e}");
            }
        }
    }
}

fn store_with_env(dir: &Path, env: BTreeMap<&'static str, String>) -> CredentialStore {
    let opts = CredentialOptions {
        // An empty directory: the machine's own ~/.docker must not leak in.
        docker_config_dir: Some(dir.to_path_buf()),
        ..Default::default()
    };
    CredentialStore::with_env(opts, Arc::new(move |k: &str| env.get(k).cloned()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// docker config.json (via DOCKER_AUTH_CONFIG) and podman auth.json:
    /// base64(user:password) decodes back to exactly the user and password,
    /// under any of the key spellings docker accepts.
    #[test]
    fn auth_files_round_trip_basic_credentials(
        user in "[^:\0]{0,12}",
        password in any::<String>(),
        key_style in 0usize..3,
        podman in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let key = [
            "reg.example:5000",
            "https://reg.example:5000/v1/",
            "http://reg.example:5000",
        ][key_style];
        let auth = STANDARD.encode(format!("{user}:{password}"));
        let json = serde_json::json!({"auths": {key: {"auth": auth}}}).to_string();
        let mut env = BTreeMap::new();
        if podman {
            let p = dir.path().join("auth.json");
            std::fs::write(&p, &json).unwrap();
            env.insert("REGISTRY_AUTH_FILE", p.display().to_string());
        } else {
            env.insert("DOCKER_AUTH_CONFIG", json);
        }
        let got = store_with_env(dir.path(), env)
            .resolve("reg.example:5000", "m/x")
            .unwrap();
        prop_assert_eq!(got, Some(Credential::Basic { username: user, password }));
    }

    /// Hostile credential files never panic; failures are credential errors
    /// that name the file.
    #[test]
    fn auth_files_hostile_content(
        body in prop_oneof![
            any::<String>(),
            "[{}\\[\\]\",:a-z0-9=+/]{0,40}".prop_map(|s| {
                format!("{{\"auths\":{{\"reg.example:5000\":{{\"auth\":\"{s}\"}}}}}}")
            }),
            "[{}\\[\\]\",:a-z]{0,40}".prop_map(|s| format!("{{\"auths\":{s}}}")),
        ],
        podman in any::<bool>(),
    ) {
        // Documents naming a credential helper would run a program when
        // resolved; that is not what this test is about.
        prop_assume!(!body.contains("credsStore") && !body.contains("credHelpers"));
        let dir = tempfile::tempdir().unwrap();
        let mut env = BTreeMap::new();
        let name = if podman {
            let p = dir.path().join("auth.json");
            std::fs::write(&p, &body).unwrap();
            env.insert("REGISTRY_AUTH_FILE", p.display().to_string());
            p.display().to_string()
        } else {
            env.insert("DOCKER_AUTH_CONFIG", body.clone());
            "DOCKER_AUTH_CONFIG".to_string()
        };
        if let Err(e) = store_with_env(dir.path(), env).resolve("reg.example:5000", "m/x") {
            let msg = e.to_string();
            prop_assert!(msg.starts_with("credentials: ") && msg.contains(&name), "{msg}");
        }
    }
}

type HostsCase = (String, Vec<(String, Vec<&'static str>)>, Option<String>);

fn hosts_toml() -> impl Strategy<Value = HostsCase> {
    (
        prop::option::of("https?://[a-z]{1,6}(:[0-9]{2,4})?/{0,2}"),
        prop::collection::btree_map(
            "https?://m[a-z]{0,5}(:[0-9]{2,4})?(/v2)?/?",
            prop::sample::subsequence(vec!["pull", "resolve", "push", "bogus"], 0..4),
            0..4,
        ),
    )
        .prop_map(|(server, hosts)| {
            let mut t = String::new();
            if let Some(s) = &server {
                t.push_str(&format!("server = {s:?}\n"));
            }
            for (url, caps) in &hosts {
                t.push_str(&format!("[host.{url:?}]\ncapabilities = {caps:?}\n"));
            }
            (t, hosts.into_iter().collect(), server)
        })
}

proptest! {
    /// hosts.toml as `HostsConfig::load` reads it from `<dir>/<host>/hosts.toml`
    /// (falling back to `_default`): the shapes containerd writes always load,
    /// a missing file is `None`, and arbitrary text never panics and is
    /// refused with an error naming the file. (Turning a config into
    /// endpoints, `registry::hosts::endpoints_for`, is not public; the
    /// registry module's own tests cover it.)
    #[test]
    fn hosts_toml_loads(
        (text, _hosts, _server) in hosts_toml(),
        noise in any::<String>(),
        use_noise in prop::bool::weighted(0.3),
        default_dir in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        prop_assert!(HostsConfig::load(dir.path(), "reg.example").unwrap().is_none());
        let sub = if default_dir { "_default" } else { "reg.example" };
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        let body = if use_noise { noise } else { text };
        let file = dir.path().join(sub).join("hosts.toml");
        std::fs::write(&file, &body).unwrap();
        match HostsConfig::load(dir.path(), "reg.example") {
            Ok(cfg) => prop_assert!(cfg.is_some()),
            Err(e) => {
                prop_assert!(use_noise, "valid hosts.toml refused: {e}\n{body}");
                prop_assert!(e.to_string().contains(&file.display().to_string()), "{e}");
            }
        }
    }
}
