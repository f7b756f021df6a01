//! OpenSSF Model Signing, both directions, with the real `model_signing`
//! CLI (model-signing 1.1.1 from PyPI, installed by integration/setup.sh)
//! and a real docker-registry 2.8:
//! - `modelpack sign` → push → a fresh `pull --verify-key` → extract, and
//!   `model_signing verify key` passes on the extracted directory; a byte
//!   changed in one file makes both it and `modelpack verify --dir` fail,
//!   naming the file;
//! - `model_signing sign key DIR` → `modelpack build DIR` → `sign --attach`
//!   → push, and `modelpack verify` (from the referrer, or `--signature`)
//!   passes;
//! - `pull --verify-key` with a wrong key, an unsigned model, a tampered
//!   bundle and another model's signature: each refused, nothing stored.
//!
//! Keys: P-256 SEC1 and P-384 PKCS#8, made with openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use modelpack_e2e::services::{Auth, Registry};
use modelpack_e2e::{fails, ok, require_tool};
use serde_json::Value;

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
            .env_remove("MODELPACK_CONFIG");
        c
    }
    fn run(&self, store: &str, args: &[&str]) -> String {
        ok(self.mp(store).args(args).output().unwrap(), &args.join(" "))
    }
    fn json(&self, store: &str, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.run(store, &a)).unwrap()
    }
    fn stored_models(&self, store: &str) -> usize {
        if !self.path(store).join("index.json").exists() {
            return 0;
        }
        self.json(store, &["ls"]).as_array().map_or(0, Vec::len)
    }
}

fn model_signing() -> String {
    let python = modelpack_e2e::python();
    let bin = Path::new(&python).with_file_name("model_signing");
    assert!(
        bin.exists(),
        "model_signing is required: run integration/setup.sh ({} missing)",
        bin.display()
    );
    bin.display().to_string()
}

fn keys(env: &Env, name: &str, curve: &str, pkcs8: bool) -> (PathBuf, PathBuf) {
    modelpack_e2e::ec_keypair(env.dir.path(), name, curve, pkcs8)
}

/// `model_signing verify key DIR`: its output when it fails.
fn ms_verify(ms: &str, dir: &Path, sig: &Path, public: &Path) -> Result<(), String> {
    let out = Command::new(ms)
        .args(["verify", "key"])
        .arg(dir)
        .arg("--signature")
        .arg(sig)
        .arg("--public_key")
        .arg(public)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn sample(dir: &Path, tag: &str) {
    modelpack_common::modelfile::write_sample_model(dir, 2, 200_000).unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"model_type":"{tag}"}}"#),
    )
    .unwrap();
}

#[test]
fn our_signatures_verify_with_model_signing_and_theirs_with_us() {
    require_tool("openssl");
    let ms = model_signing();
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let (priv256, pub256) = keys(&env, "p256", "prime256v1", false);
    let (_, pub384) = keys(&env, "p384", "secp384r1", true);

    // Ours: sign from layer digests, push, pull verified, extract.
    let model = env.path("model");
    sample(&model, "ours");
    let r = format!("{}/models/signed:v1", reg.host);
    env.run("s1", &["build", "-q", "-t", &r, model.to_str().unwrap()]);
    let sig = env.path("model.sig");
    let signed = env.json(
        "s1",
        &[
            "sign",
            &r,
            "--key",
            priv256.to_str().unwrap(),
            "--output",
            sig.to_str().unwrap(),
        ],
    );
    assert!(signed["files"].as_u64().unwrap() >= 4, "{signed}");
    env.run("s1", &["verify", &r, "--key", pub256.to_str().unwrap()]);
    let pushed = env.json("s1", &["push", &r]);
    assert_eq!(
        pushed["signatures"].as_array().unwrap().len(),
        1,
        "{pushed}"
    );
    let listed = env.json("s1", &["referrers", "--remote", &r]);
    let types: Vec<&str> = listed["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["artifactType"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"application/vnd.dev.sigstore.bundle.v0.3+json"),
        "{listed}"
    );
    assert!(
        types.contains(&"application/vnd.modelpack.chunks.v1+json"),
        "{listed}"
    );
    env.run(
        "s1",
        &["verify", "--remote", &r, "--key", pub256.to_str().unwrap()],
    );
    let out = env.path("out");
    env.run(
        "s2",
        &[
            "pull",
            &r,
            "--verify-key",
            pub256.to_str().unwrap(),
            "--extract-dir",
            out.to_str().unwrap(),
        ],
    );
    // fetch checks before anything is written, too.
    let cfg = env.path("cfg");
    env.run(
        "s2",
        &[
            "fetch",
            &r,
            "--verify-key",
            pub256.to_str().unwrap(),
            "--output",
            cfg.to_str().unwrap(),
            "--patterns",
            "*.json",
        ],
    );
    assert!(cfg.join("config.json").exists());
    let wrong = env.path("wrong");
    let err = fails(
        env.mp("s2")
            .args([
                "fetch",
                &r,
                "--verify-key",
                pub384.to_str().unwrap(),
                "--output",
                wrong.to_str().unwrap(),
                "--patterns",
                "*.json",
            ])
            .output()
            .unwrap(),
        "fetch with the wrong key",
    );
    assert!(err.contains("does not verify"), "{err}");
    assert!(!wrong.exists() || modelpack_e2e::files_under(&wrong).is_empty());
    // The signature came along with the pull: verify works offline.
    env.run("s2", &["verify", &r, "--key", pub256.to_str().unwrap()]);
    ms_verify(&ms, &out, &sig, &pub256).expect("model_signing verify key on our extracted model");
    // One byte changed: both tools refuse, naming the file.
    let victim = out.join("config.json");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[2] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let said =
        ms_verify(&ms, &out, &sig, &pub256).expect_err("model_signing accepted a changed file");
    assert!(said.contains("config.json"), "model_signing: {said}");
    let err = fails(
        env.mp("s2")
            .args([
                "verify",
                "--dir",
                out.to_str().unwrap(),
                "--signature",
                sig.to_str().unwrap(),
                "--key",
                pub256.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "verify --dir of a changed file",
    );
    assert!(err.contains("content differs: config.json"), "{err}");

    // Theirs: model_signing signs a directory; we build, attach, push, verify.
    let theirs_dir = env.path("theirs");
    sample(&theirs_dir, "theirs");
    let their_sig = env.path("their.sig");
    ok(
        Command::new(&ms)
            .args(["sign", "key"])
            .arg(&theirs_dir)
            .arg("--private_key")
            .arg(&priv256)
            .arg("--signature")
            .arg(&their_sig)
            .output()
            .unwrap(),
        "model_signing sign key",
    );
    let r2 = format!("{}/models/theirs:v1", reg.host);
    env.run(
        "s1",
        &["build", "-q", "-t", &r2, theirs_dir.to_str().unwrap()],
    );
    env.run(
        "s1",
        &[
            "verify",
            &r2,
            "--key",
            pub256.to_str().unwrap(),
            "--signature",
            their_sig.to_str().unwrap(),
        ],
    );
    env.run(
        "s1",
        &["sign", &r2, "--attach", their_sig.to_str().unwrap()],
    );
    env.run("s1", &["push", &r2]);
    env.run(
        "s3",
        &["pull", &r2, "--verify-key", pub256.to_str().unwrap()],
    );

    // Refusals: nothing stored, nothing written.
    let refused = |store: &str, args: &[&str], want: &str| {
        let dir = env.path(&format!("{store}-out"));
        let mut a = args.to_vec();
        let d = dir.display().to_string();
        a.extend(["--extract-dir", d.as_str()]);
        let err = fails(env.mp(store).args(&a).output().unwrap(), &a.join(" "));
        assert!(err.contains(want), "{a:?}: {err}");
        assert_eq!(env.stored_models(store), 0, "{a:?} stored a model");
        assert!(
            !dir.exists() || modelpack_e2e::files_under(&dir).is_empty(),
            "{a:?} wrote files"
        );
    };
    refused(
        "n1",
        &["pull", &r, "--verify-key", pub384.to_str().unwrap()],
        "does not verify with this key",
    );
    let unsigned = format!("{}/models/unsigned:v1", reg.host);
    env.run("s1", &["tag", &r, &unsigned]);
    let u = env.path("unsigned");
    sample(&u, "unsigned");
    env.run("s1", &["build", "-q", "-t", &unsigned, u.to_str().unwrap()]);
    env.run("s1", &["push", &unsigned]);
    refused(
        "n2",
        &["pull", &unsigned, "--verify-key", pub256.to_str().unwrap()],
        "has no signature",
    );
    // Another model's signature attached to this one.
    let other = format!("{}/models/borrowed:v1", reg.host);
    env.run("s1", &["build", "-q", "-t", &other, u.to_str().unwrap()]);
    env.run("s1", &["sign", &other, "--attach", sig.to_str().unwrap()]);
    env.run("s1", &["push", &other]);
    refused(
        "n3",
        &["pull", &other, "--verify-key", pub256.to_str().unwrap()],
        "does not match the model",
    );
    // A tampered bundle: the statement changed under the signature.
    let mut b: Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut payload = b64
        .decode(b["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    let at = payload.iter().position(|c| *c == b'a').unwrap();
    payload[at] = b'b';
    b["dsseEnvelope"]["payload"] = Value::String(b64.encode(&payload));
    let tampered = env.path("tampered.sig");
    std::fs::write(&tampered, serde_json::to_vec(&b).unwrap()).unwrap();
    let err = fails(
        env.mp("s1")
            .args([
                "verify",
                &r,
                "--key",
                pub256.to_str().unwrap(),
                "--signature",
                tampered.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "verify a tampered bundle",
    );
    assert!(err.contains("does not verify"), "{err}");
    // (A model of its own: `r` also has its good signature in this store.)
    let t = format!("{}/models/tampered:v1", reg.host);
    let td = env.path("tampered-model");
    sample(&td, "tampered");
    env.run("s1", &["build", "-q", "-t", &t, td.to_str().unwrap()]);
    env.run("s1", &["sign", &t, "--attach", tampered.to_str().unwrap()]);
    env.run("s1", &["push", &t]);
    refused(
        "n4",
        &["pull", &t, "--verify-key", pub256.to_str().unwrap()],
        "does not verify",
    );
}

#[test]
fn tar_builds_are_signed_from_their_files_and_checked_after_download() {
    require_tool("openssl");
    let ms = model_signing();
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let (private, public) = keys(&env, "k", "secp384r1", true);
    let model = env.path("model");
    sample(&model, "tar");
    let r = format!("{}/models/tar:v1", reg.host);
    env.run(
        "s1",
        &[
            "build",
            "-q",
            "--layer-format",
            "tar+gzip",
            "-t",
            &r,
            model.to_str().unwrap(),
        ],
    );
    let sig = env.path("tar.sig");
    env.run(
        "s1",
        &[
            "sign",
            &r,
            "--key",
            private.to_str().unwrap(),
            "--output",
            sig.to_str().unwrap(),
        ],
    );
    env.run("s1", &["push", &r]);
    let out = env.path("out");
    env.run(
        "s2",
        &[
            "pull",
            &r,
            "--verify-key",
            public.to_str().unwrap(),
            "--extract-dir",
            out.to_str().unwrap(),
        ],
    );
    ms_verify(&ms, &out, &sig, &public)
        .expect("model_signing verify key on an extracted tar build");
    let err = fails(
        env.mp("s3")
            .args([
                "pull",
                &r,
                "--verify-key",
                public.to_str().unwrap(),
                "--extract-dir",
                env.path("x").to_str().unwrap(),
                "--extract-from-remote",
            ])
            .output()
            .unwrap(),
        "verify-key with extract-from-remote on tar layers",
    );
    assert!(err.contains("tar layers"), "{err}");
}

/// The store's blobs and references (index.json's manifests; none before the
/// store exists), to compare before and after a refusal.
fn store_state(env: &Env, store: &str) -> (Vec<PathBuf>, Value) {
    let blobs = env.path(store).join("blobs");
    let blobs = if blobs.exists() {
        modelpack_e2e::files_under(&blobs)
    } else {
        Vec::new()
    };
    let index = match std::fs::read(env.path(store).join("index.json")) {
        Ok(b) => serde_json::from_slice::<Value>(&b).unwrap()["manifests"].clone(),
        Err(_) => Value::Array(Vec::new()),
    };
    (blobs, index)
}

/// A tar layer's files are known only from its bytes, so they are checked
/// after download — but before anything is kept: a refused pull leaves the
/// store exactly as it was (no blob, no referrer, no tag moved or removed),
/// also when the same model was already stored under other tags.
#[test]
fn a_refused_tar_pull_keeps_nothing_and_leaves_existing_tags() {
    require_tool("openssl");
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let (private, public) = keys(&env, "k", "prime256v1", false);
    let (_, wrong) = keys(&env, "w", "prime256v1", false);
    let model = env.path("model");
    sample(&model, "tar");
    let r = format!("{}/models/tar:v1", reg.host);
    let build = |r: &str, dir: &Path| {
        env.run(
            "s1",
            &[
                "build",
                "-q",
                "--layer-format",
                "tar+gzip",
                "-t",
                r,
                dir.to_str().unwrap(),
            ],
        );
    };
    build(&r, &model);
    let sig = env.path("tar.sig");
    env.run(
        "s1",
        &[
            "sign",
            &r,
            "--key",
            private.to_str().unwrap(),
            "--output",
            sig.to_str().unwrap(),
        ],
    );
    env.run("s1", &["push", &r]);
    // A tar model whose attached bundle's statement was changed under its signature.
    let tampered = env.path("tampered.sig");
    std::fs::write(
        &tampered,
        modelpack_e2e::tampered_bundle(&std::fs::read(&sig).unwrap()),
    )
    .unwrap();
    let t = format!("{}/models/tar-tampered:v1", reg.host);
    let td = env.path("tampered-model");
    sample(&td, "tampered");
    build(&t, &td);
    env.run("s1", &["sign", &t, "--attach", tampered.to_str().unwrap()]);
    env.run("s1", &["push", &t]);

    // `ls --json`, or no models when there is no store yet.
    let listed = |store: &str| -> Value {
        if env.path(store).join("index.json").exists() {
            env.json(store, &["ls"])
        } else {
            Value::Array(Vec::new())
        }
    };
    let refused = |store: &str, r: &str, key: &Path, want: &str| {
        let before = store_state(&env, store);
        let ls = listed(store);
        let err = fails(
            env.mp(store)
                .args(["pull", r, "--verify-key", key.to_str().unwrap()])
                .output()
                .unwrap(),
            &format!("pull {r} refused"),
        );
        assert!(err.contains(want), "{r}: {err}");
        assert_eq!(store_state(&env, store), before, "{r}: the store changed");
        assert_eq!(listed(store), ls, "{r}: ls changed");
        if env.path(store).join("index.json").exists() {
            env.run(store, &["fsck"]);
        }
        let scratch: Vec<_> = modelpack_e2e::files_under(&env.path(store))
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(
            scratch.is_empty(),
            "{r}: staged downloads left: {scratch:?}"
        );
    };
    // A fresh store: nothing at all is kept.
    refused("n1", &r, &wrong, "does not verify with this key");
    assert_eq!(env.stored_models("n1"), 0);
    refused("n2", &t, &public, "does not verify");
    assert_eq!(env.stored_models("n2"), 0);
    // The same model already stored (pulled unverified, tagged locally):
    // a refused verified pull removes none of its tags or blobs.
    env.run("n3", &["pull", &r]);
    let keep = format!("{}/local/keep:v1", reg.host);
    env.run("n3", &["tag", &r, &keep]);
    refused("n3", &r, &wrong, "does not verify with this key");
    env.run("n3", &["inspect", &keep]);
    env.run("n3", &["inspect", &r]);
    // Another model tagged in a store that then refuses one.
    env.run("n4", &["pull", &t]);
    refused("n4", &r, &wrong, "does not verify with this key");
    env.run("n4", &["inspect", &t]);
    // And the right key keeps it.
    env.run(
        "n1",
        &["pull", &r, "--verify-key", public.to_str().unwrap()],
    );
    env.run("n1", &["inspect", &r]);
    env.run("n1", &["verify", &r, "--key", public.to_str().unwrap()]);
}

/// The key comes from `--verify-key` or the registry's `verify-key` in the
/// config file, and is checked before anything is used: a plain `pull`, a
/// `pull --extract-from-remote` (nothing written) and a `pull --containerd`
/// (refused before containerd is contacted) of an unsigned or wrongly signed
/// model are refused; a correctly signed one passes.
#[test]
fn verify_keys_from_the_flag_or_the_config_file_are_checked_before_anything_is_used() {
    require_tool("openssl");
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let (private, public) = keys(&env, "k", "prime256v1", false);
    let (other_private, other_public) = keys(&env, "o", "secp384r1", true);
    let build = |name: &str, extra: &[&str]| -> String {
        let r = format!("{}/models/{name}:v1", reg.host);
        let dir = env.path(name);
        sample(&dir, name);
        let mut a = vec!["build", "-q"];
        a.extend_from_slice(extra);
        a.extend(["-t", r.as_str(), dir.to_str().unwrap()]);
        env.run("s1", &a);
        r
    };
    let signed = build("signed", &[]);
    let sig = env.path("signed.sig");
    env.run(
        "s1",
        &[
            "sign",
            &signed,
            "--key",
            private.to_str().unwrap(),
            "--output",
            sig.to_str().unwrap(),
        ],
    );
    let unsigned = build("unsigned", &[]);
    let wrongly = build("wrongly", &[]);
    env.run(
        "s1",
        &["sign", &wrongly, "--key", other_private.to_str().unwrap()],
    );
    let tar = build("tarred", &["--layer-format", "tar"]);
    env.run("s1", &["sign", &tar, "--key", private.to_str().unwrap()]);
    for r in [&signed, &unsigned, &wrongly, &tar] {
        env.run("s1", &["push", r]);
    }
    let config = env.path("config.toml");
    std::fs::write(
        &config,
        format!(
            "[registries.\"{}\"]\nverify-key = \"{}\"\n",
            reg.host,
            public.display()
        ),
    )
    .unwrap();
    let with_config = |store: &str, args: &[&str]| {
        let mut c = env.mp(store);
        c.env("MODELPACK_CONFIG", &config).args(args);
        c.output().unwrap()
    };
    let refused = |store: &str, args: &[&str], want: &str| -> String {
        let err = fails(with_config(store, args), &args.join(" "));
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(env.stored_models(store), 0, "{args:?} stored a model");
        let blobs = env.path(store).join("blobs");
        assert!(
            !blobs.exists() || modelpack_e2e::files_under(&blobs).is_empty(),
            "{args:?} stored blobs"
        );
        err
    };

    // The config file's key, no flag.
    refused("c1", &["pull", &unsigned], "has no signature");
    refused("c2", &["pull", &wrongly], "does not verify with this key");
    ok(
        with_config("c3", &["pull", &signed]),
        "pull signed (config key)",
    );
    env.run(
        "c3",
        &["verify", &signed, "--key", public.to_str().unwrap()],
    );
    // The flag beats the file.
    refused(
        "c4",
        &[
            "pull",
            &signed,
            "--verify-key",
            other_public.to_str().unwrap(),
        ],
        "does not verify with this key",
    );
    ok(
        with_config(
            "c5",
            &[
                "pull",
                &wrongly,
                "--verify-key",
                other_public.to_str().unwrap(),
            ],
        ),
        "pull wrongly signed with its own key",
    );

    // --extract-from-remote of raw models: checked before a byte is written.
    for (i, (r, want)) in [
        (&unsigned, "has no signature"),
        (&wrongly, "does not verify with this key"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = env.path(&format!("remote-out{i}"));
        let o = out.to_str().unwrap();
        for via_flag in [true, false] {
            let mut a = vec![
                "pull",
                r.as_str(),
                "--extract-dir",
                o,
                "--extract-from-remote",
            ];
            if via_flag {
                a.extend(["--verify-key", public.to_str().unwrap()]);
            }
            refused(&format!("x{i}{via_flag}"), &a, want);
            assert!(
                !out.exists() || modelpack_e2e::files_under(&out).is_empty(),
                "{a:?} wrote files"
            );
        }
    }
    let out = env.path("remote-ok");
    env.run(
        "x3",
        &[
            "pull",
            &signed,
            "--verify-key",
            public.to_str().unwrap(),
            "--extract-dir",
            out.to_str().unwrap(),
            "--extract-from-remote",
        ],
    );
    assert!(out.join("config.json").exists());
    env.run(
        "x3",
        &[
            "verify",
            "--dir",
            out.to_str().unwrap(),
            "--signature",
            sig.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
    );

    // --containerd: refused before containerd is contacted (no socket here).
    let sock = env.path("no-containerd.sock");
    let s = sock.to_str().unwrap();
    for (r, key, want) in [
        (&unsigned, None, "has no signature"),
        (&wrongly, None, "does not verify with this key"),
        (&wrongly, Some(&public), "does not verify with this key"),
        (&tar, Some(&public), "--containerd"),
    ] {
        let mut a = vec!["pull", r.as_str(), "--containerd", "--address", s];
        if let Some(k) = key {
            a.extend(["--verify-key", k.to_str().unwrap()]);
        }
        let err = refused("d1", &a, want);
        assert!(
            !err.contains(s),
            "{a:?} reached for containerd before the signature was checked: {err}"
        );
    }
    // A signed model passes the check and only then reaches for containerd.
    let err = fails(
        with_config("d1", &["pull", &signed, "--containerd", "--address", s]),
        "pull --containerd without containerd",
    );
    assert!(
        !err.contains("signature") && err.contains("no-containerd.sock"),
        "{err}"
    );
}

/// A model directory with nested subdirectories (component order: `a/b <
/// a/c < a-b`) and its files written.
fn nested(dir: &Path, tag: &str) {
    sample(dir, tag);
    for (p, text) in [
        ("tokenizer/sub/vocab.json", "{\"v\":1}"),
        ("tokenizer/sub-x.json", "{\"x\":1}"),
        ("tokenizer/a/b.json", "{\"b\":1}"),
        ("tokenizer/a-b.json", "{\"ab\":1}"),
    ] {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, format!("{text}{tag}")).unwrap();
    }
}

/// What a signature ignores is what its statement says, for both tools:
/// `modelpack sign` of a model built from a Modelfile records `Modelfile` in
/// `ignore_paths` (so the build directory and an extracted one both pass
/// `model_signing verify`), while a signature that does not list it refuses
/// an injected Modelfile in `verify --dir` exactly as `model_signing` does;
/// and a `model_signing` signature over a directory holding a Modelfile is
/// checked against the Modelfile the build recorded, byte for byte.
#[test]
fn the_signature_decides_what_is_ignored_and_both_tools_agree() {
    require_tool("openssl");
    let ms = model_signing();
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let (private, public) = keys(&env, "k", "prime256v1", false);
    let our_verify_dir = |dir: &Path, sig: &Path| {
        env.mp("s1")
            .args(["verify", "--dir"])
            .arg(dir)
            .arg("--signature")
            .arg(sig)
            .arg("--key")
            .arg(&public)
            .output()
            .unwrap()
    };

    // Ours, from a directory whose Modelfile is on disk.
    let src = env.path("src");
    nested(&src, "ours");
    env.run("s1", &["modelfile", "generate", src.to_str().unwrap()]);
    assert!(src.join("Modelfile").exists());
    let r = format!("{}/models/nested:v1", reg.host);
    env.run("s1", &["build", "-q", "-t", &r, src.to_str().unwrap()]);
    let sig = env.path("ours.sig");
    env.run(
        "s1",
        &[
            "sign",
            &r,
            "--key",
            private.to_str().unwrap(),
            "--output",
            sig.to_str().unwrap(),
        ],
    );
    let b: Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    use base64::Engine as _;
    let st: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(b["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let ignore = st["predicate"]["serialization"]["ignore_paths"].clone();
    assert!(
        ignore.as_array().unwrap().iter().any(|p| p == "Modelfile"),
        "{ignore}"
    );
    let names: Vec<&str> = st["predicate"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(
        pos("tokenizer/a/b.json") < pos("tokenizer/a-b.json")
            && pos("tokenizer/sub/vocab.json") < pos("tokenizer/sub-x.json"),
        "{names:?}"
    );
    assert!(!names.contains(&"Modelfile"), "{names:?}");
    // The build directory itself (Modelfile included) passes model_signing.
    ms_verify(&ms, &src, &sig, &public).expect("model_signing verify on the build directory");
    ok(
        our_verify_dir(&src, &sig),
        "verify --dir of the build directory",
    );
    env.run("s1", &["push", &r]);
    let out = env.path("out");
    env.run(
        "s2",
        &[
            "pull",
            &r,
            "--verify-key",
            public.to_str().unwrap(),
            "--extract-dir",
            out.to_str().unwrap(),
        ],
    );
    assert!(out.join("tokenizer/sub/vocab.json").exists());
    ms_verify(&ms, &out, &sig, &public).expect("model_signing verify on the extracted model");
    ok(
        our_verify_dir(&out, &sig),
        "verify --dir of the extracted model",
    );
    // A file in a nested directory nobody signed: both refuse, naming it.
    let evil = out.join("tokenizer/sub/evil.py");
    std::fs::write(&evil, "import os").unwrap();
    let said =
        ms_verify(&ms, &out, &sig, &public).expect_err("model_signing accepted an extra file");
    assert!(said.contains("evil.py"), "model_signing: {said}");
    let err = fails(
        our_verify_dir(&out, &sig),
        "verify --dir with an extra file",
    );
    assert!(err.contains("not signed: tokenizer/sub/evil.py"), "{err}");
    std::fs::remove_file(&evil).unwrap();

    // Theirs over a directory without a Modelfile: an injected one is refused by both.
    let plain = env.path("plain");
    nested(&plain, "plain");
    let their_sig = env.path("their.sig");
    let ms_sign = |dir: &Path, sig: &Path| {
        ok(
            Command::new(&ms)
                .args(["sign", "key"])
                .arg(dir)
                .arg("--private_key")
                .arg(&private)
                .arg("--signature")
                .arg(sig)
                .output()
                .unwrap(),
            "model_signing sign key",
        )
    };
    ms_sign(&plain, &their_sig);
    ok(
        our_verify_dir(&plain, &their_sig),
        "verify --dir of their directory",
    );
    std::fs::write(plain.join("Modelfile"), "MODEL evil.bin\n").unwrap();
    let said = ms_verify(&ms, &plain, &their_sig, &public)
        .expect_err("model_signing accepted an injected Modelfile");
    assert!(said.contains("Modelfile"), "model_signing: {said}");
    let err = fails(
        our_verify_dir(&plain, &their_sig),
        "verify --dir with an injected Modelfile",
    );
    assert!(err.contains("not signed: Modelfile"), "{err}");

    // Theirs over a directory holding the Modelfile the build then uses.
    let with = env.path("with-modelfile");
    nested(&with, "with");
    env.run("s1", &["modelfile", "generate", with.to_str().unwrap()]);
    let with_sig = env.path("with.sig");
    ms_sign(&with, &with_sig);
    let r2 = format!("{}/models/theirs-modelfile:v1", reg.host);
    env.run("s1", &["build", "-q", "-t", &r2, with.to_str().unwrap()]);
    env.run(
        "s1",
        &[
            "verify",
            &r2,
            "--key",
            public.to_str().unwrap(),
            "--signature",
            with_sig.to_str().unwrap(),
        ],
    );
    // Built from another Modelfile than the one signed: refused, naming it.
    let mut text = std::fs::read_to_string(with.join("Modelfile")).unwrap();
    text.push_str("# changed after signing\n");
    std::fs::write(with.join("Modelfile"), text).unwrap();
    let r3 = format!("{}/models/theirs-modelfile:v2", reg.host);
    env.run("s1", &["build", "-q", "-t", &r3, with.to_str().unwrap()]);
    let err = fails(
        env.mp("s1")
            .args([
                "verify",
                &r3,
                "--key",
                public.to_str().unwrap(),
                "--signature",
                with_sig.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "verify a build from another Modelfile",
    );
    assert!(err.contains("content differs: Modelfile"), "{err}");
    // `verify REF` names the file that differs in the model, too.
    std::fs::write(with.join("tokenizer/a-b.json"), "changed").unwrap();
    let r4 = format!("{}/models/theirs-modelfile:v3", reg.host);
    env.run("s1", &["build", "-q", "-t", &r4, with.to_str().unwrap()]);
    let err = fails(
        env.mp("s1")
            .args([
                "verify",
                &r4,
                "--key",
                public.to_str().unwrap(),
                "--signature",
                with_sig.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "verify a changed model",
    );
    assert!(
        err.contains("content differs: Modelfile, tokenizer/a-b.json"),
        "{err}"
    );
}
