//! Two promises the security model makes that no single verb's test covers:
//! no credential ever reaches the terminal or a log, whatever the verbosity,
//! and one store shared by many concurrent writers (and by `rm`/`prune`)
//! stays consistent — `fsck` finds nothing wrong afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use modelpack_e2e::services::{Auth, Registry, TokenRegistry};
use modelpack_e2e::{ok, require_tool};

const BIN: &str = env!("CARGO_BIN_EXE_docker-modelpack");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn mp(&self, store: &str) -> Command {
        let mut c = Command::new(BIN);
        c.env("MODELPACK_HOME", self.path(store))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("HOME", self.path("home"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DOCKER_AUTH_CONFIG")
            .env_remove("NO_COLOR");
        c
    }
    fn model(&self, name: &str, shards: usize) -> PathBuf {
        let dir = self.path(name);
        if !dir.exists() {
            modelpack_common::modelfile::write_sample_model(&dir, shards, 256 << 10).unwrap();
        }
        dir
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Everything a run printed, both streams, for grepping.
fn all_output(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `args` at `-vvv` (and once more with RUST_LOG=trace, which turns on
/// every dependency's tracing too) and fails if any form of a secret shows.
fn assert_no_secret(
    env: &Env,
    store: &str,
    args: &[&str],
    secrets: &[String],
    stdin: Option<&str>,
) {
    for rust_log in [None, Some("trace")] {
        let mut c = env.mp(store);
        c.arg("-vvv").args(args);
        if let Some(l) = rust_log {
            c.env("RUST_LOG", l);
        }
        let out = if let Some(input) = stdin {
            use std::io::Write;
            let mut child = c
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        } else {
            c.output().unwrap()
        };
        let text = all_output(&out);
        assert!(
            !text.trim().is_empty(),
            "`{}` at -vvv printed nothing; the check would prove nothing",
            args.join(" ")
        );
        for s in secrets {
            assert!(
                !text.contains(s.as_str()),
                "`{}` (RUST_LOG={rust_log:?}, exit {}) printed a credential ({s:?}):\n{text}",
                args.join(" "),
                out.status
            );
        }
    }
}

/// Every verb, at the highest verbosity, against a password-protected
/// registry and a token registry: neither the password, nor the Basic
/// header's base64, nor an identity token, nor an issued bearer token (a
/// JWT, `eyJ…`) appears in anything printed — on success or on failure.
#[test]
fn no_verb_prints_a_credential_at_any_verbosity() {
    require_tool("htpasswd");
    let env = Env::new();
    let password = "Pa55-xyzzy-plugh-7734";
    let reg = Registry::start(
        &env.path("reg"),
        Auth::Htpasswd {
            user: "alice".into(),
            password: password.into(),
        },
    );
    let secrets = vec![
        password.to_string(),
        b64(&format!("alice:{password}")),
        b64(&format!("alice:{password}"))
            .trim_end_matches('=')
            .to_string(),
        "eyJ".to_string(),
    ];
    let host = reg.host.clone();
    let r = format!("{host}/models/secret:v1");
    let r2 = format!("{host}/models/secret2:v1");
    let model = env.model("model", 2);
    let model_s = model.to_str().unwrap();
    let out = env.path("out");
    let out_s = out.to_str().unwrap();
    let extra = env.path("chat_template.jinja");
    std::fs::write(&extra, "{{ messages }}").unwrap();
    let extra_s = extra.to_str().unwrap();
    let store = "store";
    let (f_dir, x_dir) = (env.path("f"), env.path("x"));
    let (f_s, x_s) = (f_dir.to_str().unwrap(), x_dir.to_str().unwrap());
    let v2 = format!("{host}/models/secret:v2");
    let up = format!("{host}/models/up");
    let tuned = format!("{host}/models/tuned:v1");

    // login reads the password from stdin and stores it; then every verb uses it.
    assert_no_secret(
        &env,
        store,
        &["login", &host, "-u", "alice", "--password-stdin"],
        &secrets,
        Some(&format!("{password}\n")),
    );
    let verbs: Vec<Vec<&str>> = vec![
        vec!["build", "-t", &r, model_s],
        vec!["push", &r],
        vec!["build", "--output-remote", "-t", &r2, model_s],
        vec!["inspect", "--remote", &r],
        vec!["inspect", &r],
        vec!["ls"],
        vec!["validate", &r],
        vec!["tag", &r, &v2],
        vec!["pull", &r2],
        vec!["pull", &r, "--extract-dir", out_s, "--extract-from-remote"],
        vec!["fetch", &r, "--output", f_s, "--patterns", "*.json"],
        vec!["upload", extra_s, "--repo", &up],
        vec!["attach", extra_s, "-s", &r, "-t", &tuned, "--output-remote"],
        vec!["extract", &r, "--output", x_s],
        vec!["rm", &v2],
        vec!["prune"],
        vec!["fsck"],
    ];
    for args in &verbs {
        assert_no_secret(&env, store, args, &secrets, None);
    }
    // Failures print errors with context; the credential must not be part of it.
    let wrong = "Wr0ng-but-also-secret-991";
    std::fs::write(
        env.path("docker/config.json"),
        format!(
            r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
            b64(&format!("alice:{wrong}"))
        ),
    )
    .unwrap();
    let mut wrong_secrets = secrets.clone();
    wrong_secrets.push(wrong.to_string());
    wrong_secrets.push(b64(&format!("alice:{wrong}")));
    for args in [
        vec!["push", r.as_str()],
        vec!["pull", &r2],
        vec!["inspect", "--remote", &r],
    ] {
        assert_no_secret(&env, "store-wrong", &args, &wrong_secrets, None);
    }
    assert_no_secret(&env, store, &["logout", &host], &secrets, None);

    // Token auth: the password goes to the realm, a JWT comes back; neither shows.
    let tr = TokenRegistry::start(
        &env.path("regt"),
        &format!("bob:{password}"),
        &["--refresh", "rt-bob-refresh-4410:bob"],
    );
    let th = tr.registry.host.clone();
    let tref = format!("{th}/models/tok:v1");
    std::fs::write(
        env.path("docker/config.json"),
        format!(
            r#"{{"auths":{{"{th}":{{"auth":"{}"}}}}}}"#,
            b64(&format!("bob:{password}"))
        ),
    )
    .unwrap();
    let mut token_secrets = vec![
        password.to_string(),
        b64(&format!("bob:{password}")),
        "eyJ".to_string(),
    ];
    for args in [
        vec!["build", "-t", tref.as_str(), model_s],
        vec!["push", &tref],
        vec!["inspect", "--remote", &tref],
        vec![
            "pull",
            &tref,
            "--extract-dir",
            env.path("tout").to_str().unwrap(),
        ],
    ] {
        assert_no_secret(&env, "store-tok", &args, &token_secrets, None);
    }
    // An identity (refresh) token is a credential too.
    std::fs::write(
        env.path("docker/config.json"),
        format!(r#"{{"auths":{{"{th}":{{"identitytoken":"rt-bob-refresh-4410"}}}}}}"#),
    )
    .unwrap();
    token_secrets.push("rt-bob-refresh-4410".into());
    assert_no_secret(&env, "store-tok2", &["pull", &tref], &token_secrets, None);
}

fn spawn(env: &Env, store: &str, args: &[&str]) -> std::process::Child {
    env.mp(store)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Eight writers at once on one store — builds of two models that share
/// files, pulls of a third and fourth that share blobs with them, `rm` and
/// `prune` — then `fsck`: every blob verifies, every reference is whole, no
/// debris; the models that should be there extract.
#[test]
fn eight_concurrent_writers_leave_a_store_fsck_finds_clean() {
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let host = reg.host.clone();
    let a = env.model("a", 3);
    // b shares every file of a but one.
    let b = env.path("b");
    copy_dir(&a, &b);
    std::fs::write(b.join("extra.bin"), vec![7u8; 300 << 10]).unwrap();
    // Publish two models from another store so the shared store pulls them.
    let (pa, pb) = (
        format!("{host}/models/pa:v1"),
        format!("{host}/models/pb:v1"),
    );
    for (r, m) in [(&pa, &a), (&pb, &b)] {
        ok(
            env.mp("seed")
                .args(["build", "-q", "-t", r, m.to_str().unwrap()])
                .output()
                .unwrap(),
            "seed build",
        );
        ok(
            env.mp("seed").args(["push", r]).output().unwrap(),
            "seed push",
        );
    }
    // Something for rm to remove while the rest run.
    ok(
        env.mp("shared")
            .args(["build", "-q", "-t", "local/doomed:v1", b.to_str().unwrap()])
            .output()
            .unwrap(),
        "build doomed",
    );
    for round in 0..3 {
        let ta = format!("local/a:r{round}");
        let tb = format!("local/b:r{round}");
        let children = vec![
            (
                "build a",
                spawn(
                    &env,
                    "shared",
                    &["build", "-q", "-t", &ta, a.to_str().unwrap()],
                ),
            ),
            (
                "build b",
                spawn(
                    &env,
                    "shared",
                    &["build", "-q", "-t", &tb, b.to_str().unwrap()],
                ),
            ),
            ("pull pa", spawn(&env, "shared", &["pull", "-q", &pa])),
            ("pull pb", spawn(&env, "shared", &["pull", "-q", &pb])),
            ("pull pa again", spawn(&env, "shared", &["pull", "-q", &pa])),
            ("rm", spawn(&env, "shared", &["rm", "local/doomed:v1"])),
            ("prune", spawn(&env, "shared", &["prune"])),
            ("prune again", spawn(&env, "shared", &["prune"])),
        ];
        for (what, c) in children {
            let out = c.wait_with_output().unwrap();
            // rm of an already-removed tag may fail in later rounds; nothing else may.
            if what != "rm" || round == 0 {
                ok(out, &format!("round {round}: {what}"));
            }
        }
        let fsck = env.mp("shared").args(["--json", "fsck"]).output().unwrap();
        let report: serde_json::Value = serde_json::from_str(&ok(fsck, "fsck")).unwrap();
        assert_eq!(
            report["problems"],
            serde_json::json!([]),
            "round {round}: the store is inconsistent: {report}"
        );
        assert!(report["blobsVerified"].as_u64().unwrap() > 0, "{report}");
        for (r, m) in [(&ta, &a), (&tb, &b), (&pa, &a), (&pb, &b)] {
            let dest = env.path(&format!("x-{round}-{}", r.replace(['/', ':'], "_")));
            ok(
                env.mp("shared")
                    .args(["extract", r, "--output", dest.to_str().unwrap()])
                    .output()
                    .unwrap(),
                &format!("round {round}: extract {r}"),
            );
            modelpack_e2e::assert_same_tree(m, &dest);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}
