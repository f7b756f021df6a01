//! End-to-end tests of the core verbs through the real binary: build, inspect,
//! validate, extract, ls/tag/rm/prune, determinism across copies and days,
//! skopeo reading the store, the docker CLI plugin protocol, malicious artifacts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use modelpack_e2e::{assert_same_tree, copy_tree, fails, ok, require_tool};
use sha2::Digest as _;

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
    fn store(&self) -> PathBuf {
        self.path("store")
    }
    /// `modelpack …` (standalone mode) against this env's store.
    fn mp(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("MODELPACK_HOME", self.store())
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND");
        c
    }
    fn run(&self, args: &[&str]) -> String {
        ok(self.mp().args(args).output().unwrap(), &args.join(" "))
    }
    /// A small HF-style model plus an executable script.
    fn model(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        modelpack_common::modelfile::write_sample_model(&dir, 2, 300_000).unwrap();
        std::fs::create_dir_all(dir.join("scripts")).unwrap();
        std::fs::write(dir.join("scripts/run.sh"), "#!/bin/sh\necho run\n").unwrap();
        std::fs::set_permissions(
            dir.join("scripts/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        dir
    }
}

fn modelfile(env: &Env, model: &Path) -> PathBuf {
    let mf = env.path("Modelfile");
    env.run(&[
        "modelfile",
        "generate",
        model.to_str().unwrap(),
        "--output",
        mf.to_str().unwrap(),
        "--overwrite",
    ]);
    mf
}

#[test]
fn modelfile_generate_writes_the_spec_param_size_and_classifies_datasets() {
    let env = Env::new();
    let dir = env.path("m");
    // 2 shards × 850,000 bf16 elements = 1,700,000 parameters.
    modelpack_common::modelfile::write_sample_model(&dir, 2, 1_700_000).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/train.jsonl"), "{\"text\":\"hi\"}\n").unwrap();
    let text = std::fs::read_to_string(modelfile(&env, &dir)).unwrap();
    assert!(
        text.lines().any(|l| l == "PARAMSIZE 1.7M"),
        "one-decimal grammar: {text}"
    );
    assert!(
        text.lines().any(|l| l == "DATASET data/train.jsonl"),
        "{text}"
    );
    assert!(!text.contains("CODE data/train.jsonl"), "{text}");
}

#[test]
fn reflink_always_with_tar_layers_is_refused_before_anything_is_stored() {
    let env = Env::new();
    let model = env.model("model");
    let err = fails(
        env.mp()
            .args([
                "build",
                "--reflink",
                "always",
                "--layer-format",
                "tar",
                "-t",
                "localhost/t/r:v1",
            ])
            .arg(&model)
            .output()
            .unwrap(),
        "build --reflink always --layer-format tar",
    );
    assert!(
        err.contains("--reflink always") && err.contains("--layer-format raw"),
        "{err}"
    );
    let blobs = env.store().join("blobs/sha256");
    assert_eq!(
        std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0),
        0,
        "a refused build stored blobs"
    );
}

#[test]
fn build_validate_extract_reproduces_every_file() {
    let env = Env::new();
    let model = env.model("model");
    let mf = modelfile(&env, &model);
    let text = std::fs::read_to_string(&mf).unwrap();
    assert!(text.contains("FORMAT safetensors"), "{text}");
    assert!(text.contains("PRECISION bfloat16"), "{text}");
    let digest = env.run(&[
        "build",
        "-t",
        "localhost/t/model:v1",
        "-f",
        mf.to_str().unwrap(),
        model.to_str().unwrap(),
    ]);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    env.run(&["validate", "localhost/t/model:v1"]);
    let out = env.path("out");
    env.run(&[
        "extract",
        "localhost/t/model:v1",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_same_tree(&model, &out);
    // A default build records each file's own mtime, sub-seconds included, and extract restores it.
    for f in ["config.json", "scripts/run.sh"] {
        let (src, dst) = (
            std::fs::metadata(model.join(f))
                .unwrap()
                .modified()
                .unwrap(),
            std::fs::metadata(out.join(f)).unwrap().modified().unwrap(),
        );
        assert_eq!(src, dst, "{f}: mtime not restored");
    }
    // Re-extract skips unchanged files.
    let again = env.run(&[
        "--json",
        "extract",
        "localhost/t/model:v1",
        "--output",
        out.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(
        v["stats"]["filesWritten"]
            .as_u64()
            .or(v["stats"]["files_written"].as_u64()),
        Some(0),
        "{again}"
    );
}

#[test]
fn extract_refuses_to_replace_a_changed_file_unless_forced() {
    let env = Env::new();
    let model = env.model("model");
    let mf = modelfile(&env, &model);
    env.run(&[
        "build",
        "-q",
        "-t",
        "localhost/t/x:v1",
        "-f",
        mf.to_str().unwrap(),
        model.to_str().unwrap(),
    ]);
    let out = env.path("out");
    std::fs::create_dir_all(out.join("scripts")).unwrap();
    std::fs::write(out.join("config.json"), b"my own notes").unwrap();
    std::fs::create_dir_all(out.join("scripts/run.sh")).unwrap();
    let res = env
        .mp()
        .args([
            "extract",
            "localhost/t/x:v1",
            "--output",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(
        err.contains("config.json has other content")
            && err.contains("scripts/run.sh is a directory")
            && err.contains("--force"),
        "{err}"
    );
    // Nothing was written: the user's file is intact and no model file appeared.
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        b"my own notes"
    );
    assert!(!out.join("generation_config.json").exists());
    // An identical file is no conflict; --force replaces what differs.
    std::fs::remove_dir(out.join("scripts/run.sh")).unwrap();
    env.run(&[
        "extract",
        "localhost/t/x:v1",
        "--output",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert_same_tree(&model, &out);
    std::fs::copy(model.join("config.json"), out.join("config.json")).unwrap();
    env.run(&[
        "extract",
        "localhost/t/x:v1",
        "--output",
        out.to_str().unwrap(),
    ]);
}

#[test]
fn a_mistyped_store_is_not_created_and_a_model_without_weights_is_flagged() {
    let env = Env::new();
    let typo = env.path("no-such-store");
    for args in [
        vec!["ls"],
        vec!["inspect", "localhost/t/x:v1"],
        vec!["extract", "localhost/t/x:v1", "-o", "/tmp/never"],
    ] {
        let out = env
            .mp()
            .arg("--storage-dir")
            .arg(&typo)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains(&format!("no store at {}", typo.display())),
            "{args:?}: {err}"
        );
        assert!(!typo.exists(), "{args:?} created the store");
    }
    let docs = env.path("docs-only");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("README.md"), "# notes\n").unwrap();
    let out = env
        .mp()
        .args(["build", "-t", "localhost/t/docs:v1", docs.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("no MODEL layers: is this a model?"),
        "{err}"
    );
    let v = env.run(&["validate", "localhost/t/docs:v1"]);
    assert!(v.contains("no weight layer"), "{v}");
}

#[test]
fn ls_filters_by_repository_and_says_created_like_docker() {
    let env = Env::new();
    let model = env.model("model");
    let mf = modelfile(&env, &model);
    for r in ["localhost/t/a:v1", "localhost/t/a:v2", "localhost/t/b:v1"] {
        env.run(&[
            "build",
            "-q",
            "-t",
            r,
            "-f",
            mf.to_str().unwrap(),
            model.to_str().unwrap(),
        ]);
    }
    let table = env.run(&["ls", "localhost/t/a"]);
    assert!(
        table.contains("v1") && table.contains("v2") && !table.contains("localhost/t/b"),
        "{table}"
    );
    assert!(
        table.contains("seconds ago") || table.contains("second ago") || table.contains("minute"),
        "{table}"
    );
    let one = env.run(&["ls", "localhost/t/a:v2", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{one}");
    assert!(
        v[0]["created"].as_str().unwrap().contains('T'),
        "absolute in JSON: {one}"
    );
    let names = env.run(&["-q", "ls"]);
    assert_eq!(names.lines().count(), 3, "{names}");
    assert!(
        names.lines().all(|l| l.starts_with("localhost/t/")),
        "{names}"
    );
    // Without a terminal prune does not ask; -f is accepted.
    env.run(&["prune", "-f"]);
}

#[test]
fn every_verb_has_examples_and_global_options_apart() {
    let env = Env::new();
    // Every verb but the two that only print (completion, version).
    for verb in crate::cli_text::VERBS
        .iter()
        .filter(|v| !matches!(**v, "completion" | "version"))
    {
        let args: Vec<&str> = verb.split(' ').chain(["--help"]).collect();
        let help = env.run(&args);
        // Examples in the name the user typed (this binary's own, here).
        assert!(
            help.contains("Examples:\n  docker-modelpack "),
            "{verb} has no examples:\n{help}"
        );
        assert!(
            help.contains("Global options:"),
            "{verb}: global flags not grouped"
        );
    }
    let help = env.run(&["modelfile", "generate", "--help"]);
    assert!(
        help.contains("Examples:") && help.contains("PARAMSIZE, e.g. 8B"),
        "{help}"
    );
}

#[test]
fn config_show_says_where_each_setting_came_from() {
    let env = Env::new();
    let cfg = env.path("mp.toml");
    std::fs::write(
        &cfg,
        "[registries.\"harbor.example.com\"]\nlegacy-cnai = true\n",
    )
    .unwrap();
    let out = env
        .mp()
        .env("MODELPACK_CONFIG", &cfg)
        .args(["--json", "config", "show"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["configFile"]["from"], "MODELPACK_CONFIG");
    assert_eq!(v["configFile"]["exists"], true);
    assert_eq!(v["storageDir"]["from"], "MODELPACK_HOME");
    assert_eq!(v["registries"]["harbor.example.com"]["legacyCnai"], true);
    let text = env.run(&["config", "show"]);
    assert!(
        text.contains("storage dir:") && text.contains("(MODELPACK_HOME)"),
        "{text}"
    );

    // The file's defaults apply below the environment and flags.
    std::fs::write(
        &cfg,
        "storage-dir = \"from-file\"\nconcurrency = 2\n[registries.\"lab.example:5000\"]\nplain-http = true\nca-file = \"lab-ca.pem\"\n",
    )
    .unwrap();
    let show = |envs: &[(&str, &str)]| -> serde_json::Value {
        let mut c = env.mp();
        c.env_remove("MODELPACK_HOME")
            .env_remove("MODELPACK_CONCURRENCY")
            .env("MODELPACK_CONFIG", &cfg);
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.args(["--json", "config", "show"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = show(&[]);
    assert_eq!(
        v["storageDir"]["value"],
        env.path("from-file").to_str().unwrap()
    );
    assert!(
        v["storageDir"]["from"]
            .as_str()
            .unwrap()
            .contains("mp.toml"),
        "{v}"
    );
    assert_eq!(v["concurrency"]["value"], 2);
    let lab = &v["registries"]["lab.example:5000"];
    assert_eq!(lab["plainHttp"], true);
    assert_eq!(lab["caFile"], env.path("lab-ca.pem").to_str().unwrap());
    let v = show(&[
        ("MODELPACK_CONCURRENCY", "7"),
        ("MODELPACK_HOME", "/srv/mp"),
    ]);
    assert_eq!(v["concurrency"]["value"], 7);
    assert_eq!(v["concurrency"]["from"], "MODELPACK_CONCURRENCY");
    assert_eq!(v["storageDir"]["value"], "/srv/mp");
    // A verb stores where the file says when nothing else does.
    let model = env.model("model");
    let mf = modelfile(&env, &model);
    let out = env
        .mp()
        .env_remove("MODELPACK_HOME")
        .env("MODELPACK_CONFIG", &cfg)
        .args(["build", "-q", "-t", "localhost/t/file:v1", "-f"])
        .arg(&mf)
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.path("from-file/index.json").is_file());
    // A bad value is an error naming the file, for every verb.
    std::fs::write(&cfg, "concurrency = 0\n").unwrap();
    let out = env
        .mp()
        .env("MODELPACK_CONFIG", &cfg)
        .args(["ls"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("mp.toml") && err.contains("1 to 64"),
        "{err}"
    );
}

#[test]
fn json_output_follows_the_contract() {
    let env = Env::new();
    let model = env.model("model");
    let mf = modelfile(&env, &model);
    let r = "localhost/t/contract:v1";
    let j = |args: &[&str]| -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&env.run(&a)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let built = j(&[
        "build",
        "-t",
        r,
        "-f",
        mf.to_str().unwrap(),
        model.to_str().unwrap(),
    ]);
    let digest = built["digest"].as_str().unwrap().to_string();
    let inspected = j(&["inspect", r]);
    let listed = j(&["ls"]);
    let row = &listed.as_array().unwrap()[0];
    // One artifact, one size, one digest, wherever it is reported.
    assert_eq!(built["size"], inspected["size"]);
    assert_eq!(row["size"], inspected["size"]);
    assert_eq!(row["reference"], r);
    let out = env.path("out");
    let objects = vec![
        ("build", built.clone()),
        ("inspect", inspected),
        ("ls[0]", row.clone()),
        ("tag", j(&["tag", r, "localhost/t/contract:v2"])),
        ("extract", j(&["extract", r, "-o", out.to_str().unwrap()])),
        ("validate", j(&["validate", r])),
        ("referrers", j(&["referrers", r])),
        (
            "rm.removed[0]",
            j(&["rm", "localhost/t/contract:v2"])["removed"][0].clone(),
        ),
    ];
    for (verb, v) in objects {
        assert!(v["reference"].is_string(), "{verb} has no reference: {v}");
        assert_eq!(v["digest"], digest.as_str(), "{verb}: {v}");
        let text = v.to_string();
        for key in [
            "files_written",
            "files_skipped",
            "bytes_written",
            "diff_ids",
        ] {
            assert!(!text.contains(key), "{verb} has snake_case {key}: {text}");
        }
    }
}

#[test]
fn completion_scripts_name_every_verb() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = env.run(&["completion", shell]);
        for verb in [
            "build",
            "pull",
            "push",
            "sign",
            "verify",
            "mount",
            "referrers",
        ] {
            assert!(script.contains(verb), "{shell} completion lacks {verb}");
        }
    }
    let out = env.mp().args(["completion", "tcsh"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn json_output_covers_tag_and_rm_and_errors_are_json_too() {
    let env = Env::new();
    let model = env.model("model");
    let mf = modelfile(&env, &model);
    let digest = env.run(&[
        "build",
        "-q",
        "-t",
        "localhost/t/j:v1",
        "-f",
        mf.to_str().unwrap(),
        model.to_str().unwrap(),
    ]);
    let digest = digest.trim();
    let tagged: serde_json::Value =
        serde_json::from_str(&env.run(&["--json", "tag", "localhost/t/j:v1", "localhost/t/j:v2"]))
            .unwrap();
    assert_eq!(tagged["reference"], "localhost/t/j:v2");
    assert_eq!(tagged["digest"], digest);
    let removed: serde_json::Value =
        serde_json::from_str(&env.run(&["--json", "rm", "localhost/t/j:v2"])).unwrap();
    assert_eq!(removed["removed"][0]["reference"], "localhost/t/j:v2");
    assert_eq!(removed["removed"][0]["removed"], 1);
    let out = env
        .mp()
        .args(["--json", "inspect", "localhost/t/nope:v1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err: serde_json::Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{err}"
    );
    assert!(err["error"]["hint"].is_string(), "{err}");
}

#[test]
fn inspect_digest_is_the_stored_bytes_and_ls_tag_rm_prune_work() {
    let env = Env::new();
    let model = env.model("model");
    let mf = modelfile(&env, &model);
    let digest = env
        .run(&[
            "build",
            "-t",
            "localhost/t/model:v1",
            "-f",
            mf.to_str().unwrap(),
            model.to_str().unwrap(),
        ])
        .trim()
        .to_string();
    let js: serde_json::Value =
        serde_json::from_str(&env.run(&["inspect", "--json", "localhost/t/model:v1"])).unwrap();
    assert_eq!(js["digest"], digest.as_str());
    let hex = digest.strip_prefix("sha256:").unwrap();
    let raw = std::fs::read(env.store().join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw))),
        digest
    );
    let nfiles = modelpack_e2e::files_under(&model).len();
    assert_eq!(js["layers"].as_array().unwrap().len(), nfiles, "{js}");
    // Layer order: weight.config first, then weights, code, docs.
    let kinds: Vec<String> = js["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds[0].contains("weight.config"), "{kinds:?}");

    env.run(&["tag", "localhost/t/model:v1", "localhost/t/model:v2"]);
    let ls: serde_json::Value = serde_json::from_str(&env.run(&["ls", "--json"])).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 2, "{ls}");
    env.run(&["rm", "localhost/t/model:v1"]);
    let pruned: serde_json::Value = serde_json::from_str(&env.run(&["prune", "--json"])).unwrap();
    assert_eq!(
        pruned["blobs"].as_array().unwrap().len(),
        0,
        "v2 still references everything: {pruned}"
    );
    env.run(&["rm", &format!("localhost/t/model@{digest}")]);
    let dry: serde_json::Value =
        serde_json::from_str(&env.run(&["prune", "--dry-run", "--json"])).unwrap();
    // rm of the last reference also dropped the chunk index referrer, so
    // everything it kept alive is free too.
    assert_eq!(
        dry["blobs"].as_array().unwrap().len(),
        2 * nfiles + 4,
        "layers + their chunk indexes + config + manifest + referrer + its empty config: {dry}"
    );
    env.run(&["prune"]);
    assert_eq!(
        std::fs::read_dir(env.store().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    let err = fails(
        env.mp()
            .args(["inspect", "localhost/t/model:v2"])
            .output()
            .unwrap(),
        "inspect removed",
    );
    assert!(err.contains("not found") && err.contains("hint:"), "{err}");
}

#[test]
fn same_directory_in_different_copies_on_different_days_gives_the_same_digest() {
    require_tool("faketime");
    let env = Env::new();
    let model = env.model("model");
    let mf = modelfile(&env, &model);
    let copy = env.path("copy");
    copy_tree(&model, &copy);
    let build = |dir: &Path, day: &str, store: &str, extra: &[(&str, &str)], flags: &[&str]| {
        let mut c = Command::new("faketime");
        c.arg(day).arg(BIN).env("MODELPACK_HOME", env.path(store));
        for (k, v) in extra {
            c.env(k, v);
        }
        c.args([
            "build",
            "-t",
            "localhost/t/m:v1",
            "-f",
            mf.to_str().unwrap(),
        ])
        .args(flags)
        .arg(dir);
        ok(c.output().unwrap(), "faketime build").trim().to_string()
    };
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let a = build(&model, "2026-01-01 10:00:00", "s1", &epoch, &[]);
    let b = build(&copy, "2027-06-30 23:00:00", "s2", &epoch, &[]);
    assert_eq!(a, b, "SOURCE_DATE_EPOCH build differs across copies/days");
    let c = build(
        &model,
        "2026-01-01 10:00:00",
        "s3",
        &[],
        &["--no-creation-time"],
    );
    let d = build(
        &copy,
        "2030-01-01 00:00:00",
        "s4",
        &[],
        &["--no-creation-time"],
    );
    assert_eq!(c, d, "--no-creation-time build differs across copies/days");
    for fmt in ["tar", "tar+gzip", "tar+zstd"] {
        let e = build(
            &model,
            "2026-01-01 10:00:00",
            &format!("t1{fmt}"),
            &epoch,
            &["--layer-format", fmt],
        );
        let f = build(
            &copy,
            "2028-03-03 03:00:00",
            &format!("t2{fmt}"),
            &epoch,
            &["--layer-format", fmt],
        );
        assert_eq!(e, f, "{fmt} build differs across copies/days");
    }
}

#[test]
fn skopeo_reads_the_store() {
    require_tool("skopeo");
    let env = Env::new();
    let model = env.model("model");
    let mf = modelfile(&env, &model);
    let digest = env
        .run(&[
            "build",
            "-t",
            "localhost/t/model:v1",
            "-f",
            mf.to_str().unwrap(),
            model.to_str().unwrap(),
        ])
        .trim()
        .to_string();
    let other = env.path("other");
    let src = format!("oci:{}:localhost/t/model:v1", env.store().display());
    ok(
        Command::new("skopeo")
            .args(["copy", &src, &format!("oci:{}:copied", other.display())])
            .output()
            .unwrap(),
        "skopeo copy",
    );
    let raw = ok(
        Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                &format!("oci:{}:copied", other.display()),
            ])
            .output()
            .unwrap(),
        "skopeo inspect",
    );
    assert_eq!(
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(raw.trim_end().as_bytes()))
        ),
        digest
    );
}

#[test]
fn legacy_cnai_and_tar_formats_validate_and_extract() {
    let env = Env::new();
    let model = env.model("model");
    let mf = modelfile(&env, &model);
    env.run(&[
        "build",
        "--legacy-cnai",
        "--layer-format",
        "tar+zstd",
        "-t",
        "localhost/t/cnai:v1",
        "-f",
        mf.to_str().unwrap(),
        model.to_str().unwrap(),
    ]);
    let m = env.run(&["inspect", "--manifest", "localhost/t/cnai:v1"]);
    assert!(
        m.contains("application/vnd.cnai.model.manifest.v1+json")
            && m.contains("org.cnai.model.filepath")
            && m.contains(".v1.tar+zstd"),
        "{m}"
    );
    let out = env.path("out");
    env.run(&[
        "extract",
        "localhost/t/cnai:v1",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_same_tree(&model, &out);
}

#[test]
fn bad_modelfile_error_names_file_and_line() {
    let env = Env::new();
    let model = env.model("model");
    std::fs::write(
        model.join("Modelfile"),
        "NAME x\n# comment\nFORMATT safetensors\n",
    )
    .unwrap();
    let err = fails(
        env.mp()
            .args(["build", "-t", "localhost/t/x:v1", model.to_str().unwrap()])
            .output()
            .unwrap(),
        "bad Modelfile",
    );
    assert!(
        err.contains("Modelfile:3:") && err.contains("FORMATT"),
        "{err}"
    );
    assert!(
        !env.store().join("index.json").exists()
            || !std::fs::read_to_string(env.store().join("index.json"))
                .unwrap()
                .contains("localhost/t/x")
    );
}

#[test]
fn validate_files_prints_paths_and_exits_1() {
    let env = Env::new();
    let good =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../common/spec/modelpack-example-config.json");
    env.run(&["validate", "--config", good.to_str().unwrap()]);
    let bad = env.path("bad.json");
    std::fs::write(&bad, r#"{"descriptor":{},"config":{"paramSize":"8.03B"},"modelfs":{"type":"layers","diffIds":[]}}"#).unwrap();
    let out = env
        .mp()
        .args(["validate", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/config/paramSize") && text.contains("/modelfs/diffIds"),
        "{text}"
    );
    // What Docker Model Runner writes: valid with a warning, a failure only under --strict.
    let dmr = env.path("dmr.json");
    std::fs::write(&dmr, r#"{"descriptor":{},"config":{"paramSize":"8.03B"},"modelfs":{"type":"layers","diffIds":["sha256:1234567890abcdef1234567890abcdef1234567890abcdef1234567890abcdef"]}}"#).unwrap();
    let out = env
        .mp()
        .args(["validate", "--config", dmr.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("warning config:/config/paramSize [L1]") && text.contains(r#"write "8B""#),
        "{text}"
    );
    let out = env
        .mp()
        .args(["validate", "--strict", "--config", dmr.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn crafted_artifact_with_escaping_path_is_refused_by_extract() {
    use modelpack_common::manifest::{Descriptor, Manifest};
    use modelpack_common::media::Family;
    let env = Env::new();
    let store = modelpack_common::store::Store::open(env.store()).unwrap();
    let layer = store.put_bytes(b"pwned").unwrap();
    let mut d = Descriptor::new("application/vnd.cncf.model.weight.v1.raw", layer.clone(), 5);
    d.annotations
        .insert("org.cncf.model.filepath".into(), "../../escaped.txt".into());
    let cfg = format!(
        r#"{{"descriptor":{{}},"config":{{}},"modelfs":{{"type":"layers","diffIds":["{layer}"]}}}}"#
    );
    let cd = store.put_bytes(cfg.as_bytes()).unwrap();
    let m = Manifest::model(
        Family::Cncf,
        Descriptor::new(Family::Cncf.config_media_type(), cd, cfg.len() as u64),
        vec![d],
    );
    let bytes = m.to_bytes();
    let md = store.put_bytes(&bytes).unwrap();
    store
        .tag(
            &"localhost/evil/m:v1".parse().unwrap(),
            &Descriptor::new(
                modelpack_common::media::OCI_MANIFEST,
                md,
                bytes.len() as u64,
            ),
        )
        .unwrap();
    let out = env.path("a/b/out");
    let err = fails(
        env.mp()
            .args([
                "extract",
                "localhost/evil/m:v1",
                "--output",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "evil extract",
    );
    assert!(
        err.contains("unsafe entry in layer") && err.contains(&layer.to_string()),
        "{err}"
    );
    assert!(!env.path("escaped.txt").exists() && !env.path("a/escaped.txt").exists());
    let v = env
        .mp()
        .args(["validate", "localhost/evil/m:v1"])
        .output()
        .unwrap();
    assert_eq!(
        v.status.code(),
        Some(1),
        "validate must flag the unsafe filepath"
    );
}

#[test]
fn docker_cli_lists_and_runs_the_plugin() {
    require_tool("docker");
    let env = Env::new();
    let cfg = env.path("dockercfg");
    std::fs::create_dir_all(cfg.join("cli-plugins")).unwrap();
    std::os::unix::fs::symlink(BIN, cfg.join("cli-plugins/docker-modelpack")).unwrap();
    let docker = || {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", &cfg)
            .env("MODELPACK_HOME", env.store())
            .env("DOCKER_HOST", "unix:///nonexistent.sock");
        c
    };
    let help = ok(docker().arg("--help").output().unwrap(), "docker --help");
    assert!(help.contains("modelpack*"), "plugin not listed:\n{help}");
    let model = env.model("model");
    let mf = modelfile(&env, &model);
    let digest = ok(
        docker()
            .args([
                "modelpack",
                "build",
                "-t",
                "localhost/d/m:v1",
                "-f",
                mf.to_str().unwrap(),
                model.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "docker modelpack build",
    );
    assert!(digest.trim().starts_with("sha256:"));
    // Global docker flags before the plugin name are accepted.
    let ls = ok(
        docker()
            .args([
                "-D",
                "--config",
                cfg.to_str().unwrap(),
                "modelpack",
                "ls",
                "--names",
            ])
            .output()
            .unwrap(),
        "docker -D --config modelpack ls",
    );
    assert!(ls.contains("localhost/d/m:v1"), "{ls}");
    let usage = ok(
        docker().args(["modelpack", "--help"]).output().unwrap(),
        "docker modelpack --help",
    );
    assert!(
        usage.contains("docker modelpack"),
        "help should use the invoked name:\n{usage}"
    );
    let meta = ok(
        Command::new(BIN)
            .arg("docker-cli-plugin-metadata")
            .output()
            .unwrap(),
        "metadata",
    );
    let _: serde_json::Value = serde_json::from_str(&meta).unwrap();
}

#[test]
fn concurrent_builds_into_one_store_keep_every_tag() {
    let env = Env::new();
    let model = env.model("model");
    let mf = modelfile(&env, &model);
    let children: Vec<_> = (0..4)
        .map(|i| {
            env.mp()
                .args([
                    "build",
                    "-q",
                    "-t",
                    &format!("localhost/c/m:v{i}"),
                    "-f",
                    mf.to_str().unwrap(),
                    model.to_str().unwrap(),
                ])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let ls: serde_json::Value = serde_json::from_str(&env.run(&["ls", "--json"])).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 4, "{ls}");
}
