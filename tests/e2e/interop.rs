//! Interoperability with the other ModelPack-family tools, both ways, against
//! a real docker-registry 2.8.
//!
//! Their artifacts: byte-faithful reproductions of what Docker Model Runner
//! (v0.1 unannotated, v0.1 safetensors with its config tar, v0.2, `--format
//! cncf`) and KitOps (v1.7.0 and 2026) push (`modelpack_e2e::peers`), read
//! by every verb that reads a model — `pull`, `pull --extract-dir`,
//! `--extract-from-remote`, `extract`, `fetch '**'`, `inspect`, `inspect
//! --remote`, `validate`, `ls` — with the restored files compared byte for
//! byte with what the producer packed.
//!
//! Our artifacts: read back by re-implementations of modctl's extract
//! (raw layers to their filepath, tar layers untarred at the root) and DMR's
//! `UnpackFromLayers` (each annotated layer linked as-is to its filepath),
//! and by the real oras-py client, for raw and tar builds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use modelpack_e2e::hostile_http::request;
use modelpack_e2e::peers::{self, PeerArtifact};
use modelpack_e2e::services::{Auth, Registry};
use modelpack_e2e::{assert_same_tree, fails, files_under, ok};
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
    fn mp(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("MODELPACK_HOME", self.path("store"))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("HOME", self.path("home"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_AUTH_CONFIG");
        c
    }
    fn run(&self, args: &[&str]) -> String {
        ok(self.mp().args(args).output().unwrap(), &args.join(" "))
    }
    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.run(&a)).unwrap()
    }
}

/// The files under `dir` with their bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(dir.join(&p)).unwrap();
            (p.display().to_string(), bytes)
        })
        .collect()
}

fn assert_restores(what: &str, fixture: &PeerArtifact, dir: &Path) {
    let got = tree(dir);
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&got),
        names(&fixture.expected),
        "{}: {what} restored other files",
        fixture.name
    );
    for (path, bytes) in &fixture.expected {
        assert!(
            &got[path] == bytes,
            "{}: {what} restored {path} with other bytes",
            fixture.name
        );
    }
}

/// Every verb that reads a model, on one peer artifact; `validate` must find
/// it valid with exactly the `warnings` lints (sorted; "schema" for a schema note).
fn read_everywhere(
    env: &Env,
    reg: &Registry,
    repo: &str,
    fixture: &PeerArtifact,
    warnings: &[&str],
) -> Value {
    let r = fixture.push(reg.port, repo);
    let slug = repo.replace('/', "-");
    let remote_dir = env.path(&format!("{slug}-remote"));
    env.run(&[
        "pull",
        &r,
        "--extract-dir",
        remote_dir.to_str().unwrap(),
        "--extract-from-remote",
    ]);
    assert_restores("pull --extract-from-remote", fixture, &remote_dir);
    let fetched = env.path(&format!("{slug}-fetch"));
    env.run(&[
        "fetch",
        &r,
        "--output",
        fetched.to_str().unwrap(),
        "--patterns",
        "**",
    ]);
    assert_restores("fetch '**'", fixture, &fetched);
    let pulled = env.path(&format!("{slug}-pull"));
    env.run(&["pull", &r, "--extract-dir", pulled.to_str().unwrap()]);
    assert_restores("pull --extract-dir", fixture, &pulled);
    let extracted = env.path(&format!("{slug}-extract"));
    env.run(&["extract", &r, "--output", extracted.to_str().unwrap()]);
    assert_restores("extract", fixture, &extracted);
    let local = env.json(&["inspect", &r]);
    let remote = env.json(&["inspect", "--remote", &r]);
    assert_eq!(local["summary"], remote["summary"], "{}", fixture.name);
    assert_eq!(local["digest"], remote["digest"]);
    let report = env.json(&["validate", &r]);
    assert_eq!(report["valid"], true, "{}: {report}", fixture.name);
    assert_eq!(
        warning_lints(&report),
        warnings,
        "{}: {report}",
        fixture.name
    );
    local
}

#[test]
fn docker_model_runner_and_kitops_artifacts_restore_byte_for_byte() {
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);

    let dmr = peers::dmr_gguf_unannotated();
    let s = read_everywhere(&env, &reg, "ai/llama-unannotated", &dmr, &["L7"])["summary"].clone();
    assert_eq!(s["kind"], "Docker Model Runner (config v0.1)");
    assert_eq!(
        (
            &s["format"],
            &s["paramSize"],
            &s["architecture"],
            &s["quantization"]
        ),
        (
            &Value::from("gguf"),
            &Value::from("8.03B"),
            &Value::from("llama"),
            &Value::from("Q4_K_M")
        )
    );
    assert_eq!(s["created"], "2025-06-02T11:22:33.123456789Z");
    assert_eq!(s["declaredSize"], "4.58GiB", "DMR's config.size: {s}");

    let vllm = peers::dmr_safetensors_vllm_tar();
    read_everywhere(&env, &reg, "ai/safetensors-vllm", &vllm, &["L7"]);
    // DMR untars its own config archive, so the annotation naming the tar is
    // not a disagreement (L14 is a ModelPack question): only the one
    // "not ModelPack" note.
    let report = env.json(&[
        "validate",
        &format!("127.0.0.1:{}/ai/safetensors-vllm:v1", reg.port),
    ]);
    assert_eq!(report["valid"], true, "{report}");
    assert!(
        !report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["lint"] == "L14"),
        "{report}"
    );
    assert!(
        !tree(&env.path("ai-safetensors-vllm-extract"))
            .keys()
            .any(|k| k.ends_with(".tar")),
        "the vllm config tar must be unpacked, not written out"
    );

    let v02 = peers::dmr_v02_directory();
    let s = read_everywhere(&env, &reg, "ai/qwen-v02", &v02, &["L7"])["summary"].clone();
    assert_eq!(s["kind"], "Docker Model Runner (config v0.2)");

    // DMR's ModelPack output is valid ModelPack, with paramSize as a warning.
    let cncf = peers::dmr_cncf();
    read_everywhere(&env, &reg, "ai/llama-cncf", &cncf, &["L1", "L10"]);
    let report = env.json(&[
        "validate",
        &format!("127.0.0.1:{}/ai/llama-cncf:v1", reg.port),
    ]);
    assert_eq!(report["valid"], true, "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["path"] == "config:/config/paramSize" && p["severity"] == "warning"),
        "{report}"
    );
    assert!(
        problems.iter().all(|p| p["severity"] == "warning"),
        "{report}"
    );
    let l10: Vec<_> = problems.iter().filter(|p| p["lint"] == "L10").collect();
    assert_eq!(
        l10.len(),
        1,
        "one title summary, not one per layer: {report}"
    );

    for (repo, kit) in [
        ("jozu/tiny-v17", peers::kitops_v17()),
        ("jozu/tiny-2026", peers::kitops_newer()),
    ] {
        let s = read_everywhere(&env, &reg, repo, &kit, &["L7"])["summary"].clone();
        assert_eq!(s["kind"], "KitOps ModelKit");
        assert_eq!(
            (&s["name"], &s["version"], &s["format"], &s["family"]),
            (
                &Value::from("tiny"),
                &Value::from("1.2.0"),
                &Value::from("gguf"),
                &Value::from("llama.cpp")
            ),
            "{repo}"
        );
        // The Kitfile's model entry, apart from the package it sits in.
        assert_eq!(
            s["model"],
            serde_json::json!({"name": "tiny-llm", "path": "models/tiny.gguf", "framework": "llama.cpp", "format": "gguf", "license": "Apache-2.0", "parts": ["models/config.json"]}),
            "{repo}"
        );
        let text = env.run(&["inspect", &format!("127.0.0.1:{}/{repo}:v1", reg.port)]);
        assert!(
            text.contains("tiny-llm, at models/tiny.gguf")
                && text.contains("parts models/config.json"),
            "{text}"
        );
    }

    // ls shows the peers' names and creation dates.
    let ls = env.json(&["ls"]);
    let row = |repo: &str| {
        ls.as_array()
            .unwrap()
            .iter()
            .find(|r| r["repository"].as_str().unwrap().ends_with(repo))
            .cloned()
            .unwrap_or_else(|| panic!("{repo} not in ls: {ls}"))
    };
    assert_eq!(
        row("ai/llama-unannotated")["created"],
        "2025-06-02T11:22:33.123456789Z"
    );
    assert_eq!(row("jozu/tiny-v17")["name"], "tiny");
    assert_eq!(row("jozu/tiny-v17")["version"], "1.2.0");
    assert_eq!(row("jozu/tiny-v17")["kind"], "KitOps ModelKit");
    let table = env.run(&["ls"]);
    let line = table
        .lines()
        .find(|l| l.contains("jozu/tiny-v17"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("tiny 1.2.0"),
        "ls shows the Kitfile package: {table}"
    );
}

/// The lints a report warns with, sorted.
fn warning_lints(report: &Value) -> Vec<String> {
    let mut l: Vec<String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["severity"], "warning", "{report}");
            p["lint"].as_str().unwrap_or("schema").to_string()
        })
        .collect();
    l.sort();
    l
}

#[test]
fn modctl_artifacts_restore_byte_for_byte_and_validate() {
    use modelpack_e2e::peers::ModctlFlavour::*;
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    for (repo, flavour, kind, warnings) in [
        ("modctl/raw", Raw, "ModelPack", vec!["L10"]),
        ("modctl/tar", Tar, "ModelPack", vec![]),
        (
            "modctl/cnai",
            LegacyCnai,
            "ModelPack (legacy cnai identifiers)",
            vec!["L10", "L7", "schema"],
        ),
        (
            "modctl/attach",
            AttachDestDir,
            "ModelPack",
            vec!["L10", "L14"],
        ),
    ] {
        let fixture = peers::modctl(flavour);
        let s = read_everywhere(&env, &reg, repo, &fixture, &warnings)["summary"].clone();
        assert_eq!(s["kind"], kind, "{repo}: {s}");
        assert_eq!(
            (&s["name"], &s["format"], &s["paramSize"], &s["family"]),
            (
                &Value::from("qwen-tiny"),
                &Value::from("safetensors"),
                &Value::from("0.5B"),
                &Value::from("qwen2")
            ),
            "{repo}"
        );
        // Modes and mtimes as modctl recorded them: the metadata annotation
        // (nanoseconds) for raw layers, the tar header (seconds) for tar.
        let extracted = env.path(&format!("{}-extract", repo.replace('/', "-")));
        let meta = std::fs::metadata(extracted.join("run.py")).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o755,
            "{repo}: run.py mode"
        );
        let mtime = std::fs::metadata(extracted.join("model.safetensors"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert_eq!(mtime.as_secs(), 1_773_451_613, "{repo}: mtime");
        if flavour != Tar {
            assert_eq!(
                mtime.subsec_nanos(),
                589_793_238,
                "{repo}: sub-second mtime"
            );
        }
    }
}

#[test]
fn a_container_image_is_refused_and_nothing_is_stored() {
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let image = peers::container_image();
    let r = image.push(reg.port, "library/busybox");
    let err = fails(env.mp().args(["pull", &r]).output().unwrap(), "pull image");
    assert!(
        err.contains("is not a ModelPack artifact") && err.contains("container image"),
        "{err}"
    );
    assert!(
        err.contains("application/vnd.oci.image.config.v1+json"),
        "{err}"
    );
    let ls = env.json(&["ls"]);
    assert_eq!(ls, Value::Array(vec![]), "{ls}");
    let blobs = env.path("store/blobs/sha256");
    let stored = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(stored, 0, "a refused pull stored blobs");
    let out = env.path("img");
    fails(
        env.mp()
            .args([
                "pull",
                &r,
                "--extract-dir",
                out.to_str().unwrap(),
                "--extract-from-remote",
            ])
            .output()
            .unwrap(),
        "pull image to dir",
    );
    assert!(!out.exists() || files_under(&out).is_empty());
}

/// A manifest and a blob fetched with plain HTTP, as another tool would.
fn registry_get(port: u16, path: &str, accept: &str) -> Vec<u8> {
    let r = request(port, "GET", path, &[("Accept", accept)], b"");
    assert_eq!(r.status, 200, "GET {path}");
    r.body
}

/// modctl's extract (pkg/backend/extract.go, pkg/archiver): a raw layer is
/// written to its filepath, a tar layer is untarred at the output root.
fn modctl_extract(port: u16, repo: &str, manifest: &Value, out: &Path) {
    for l in manifest["layers"].as_array().unwrap() {
        let blob = registry_get(
            port,
            &format!("/v2/{repo}/blobs/{}", l["digest"].as_str().unwrap()),
            "*/*",
        );
        let mt = l["mediaType"].as_str().unwrap();
        let path = l["annotations"]["org.cncf.model.filepath"]
            .as_str()
            .unwrap();
        if mt.ends_with(".raw") {
            let to = out.join(path);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(to, blob).unwrap();
        } else {
            assert!(
                mt.ends_with(".tar"),
                "modctl's codec has only raw and tar: {mt}"
            );
            tar::Archive::new(&blob[..]).unpack(out).unwrap();
        }
    }
}

/// DMR's `UnpackFromLayers` (internal/bundle/unpack.go) for a cncf
/// artifactType: every layer with a filepath is linked as-is to it, never
/// extracted; layers without one are skipped.
fn dmr_unpack(port: u16, repo: &str, manifest: &Value, out: &Path) {
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );
    for l in manifest["layers"].as_array().unwrap() {
        let Some(path) = l["annotations"]["org.cncf.model.filepath"].as_str() else {
            continue;
        };
        let blob = registry_get(
            port,
            &format!("/v2/{repo}/blobs/{}", l["digest"].as_str().unwrap()),
            "*/*",
        );
        let to = out.join("model").join(path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, blob).unwrap();
    }
}

#[test]
fn our_raw_and_tar_builds_read_by_modctl_dmr_and_oras() {
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let model = env.path("model");
    modelpack_common::modelfile::write_sample_model(&model, 2, 200_000).unwrap();
    let python = modelpack_e2e::python();
    for format in ["raw", "tar", "tar+gzip", "tar+zstd"] {
        let repo = format!("ours/{}", format.replace('+', "-"));
        let r = format!("{}/{repo}:v1", reg.host);
        env.run(&[
            "build",
            "-q",
            "-t",
            &r,
            "--layer-format",
            format,
            model.to_str().unwrap(),
        ]);
        env.run(&["push", &r]);
        let report = env.json(&["validate", &r]);
        assert_eq!(report["valid"], true, "{report}");
        assert!(
            report["problems"].as_array().unwrap().is_empty(),
            "our {format} build has no warnings: {report}"
        );
        // Compressed layers' diffIds are checked from the stored blobs, so a
        // publishing pipeline's `validate --strict` passes on every format.
        ok(
            env.mp()
                .args(["validate", "--strict", &r])
                .output()
                .unwrap(),
            &format!("validate --strict of our {format} build"),
        );
        let manifest: Value = serde_json::from_slice(&registry_get(
            reg.port,
            &format!("/v2/{repo}/manifests/v1"),
            "application/vnd.oci.image.manifest.v1+json",
        ))
        .unwrap();
        // modctl's codec has only raw and tar: it cannot read compressed layers.
        if !format.contains('+') {
            let m_out = env.path(&format!("modctl-{format}"));
            modctl_extract(reg.port, &repo, &manifest, &m_out);
            assert_same_tree_bytes(
                &model,
                &m_out,
                &format!("modctl extract of our {format} build"),
            );
        }
        let oras_out = env.path(&format!("oras-{}", format.replace('+', "-")));
        let script = format!(
            "import oras.client; c=oras.client.OrasClient(hostname='{}', insecure=True); c.pull(target='{r}', outdir='{}')",
            reg.host,
            oras_out.display()
        );
        ok(
            Command::new(&python)
                .args(["-c", &script])
                .output()
                .unwrap(),
            "oras-py pull",
        );
        if format == "raw" {
            assert_same_tree(&model, &oras_out);
            let d_out = env.path("dmr-raw");
            dmr_unpack(reg.port, &repo, &manifest, &d_out);
            assert_same_tree_bytes(&model, &d_out.join("model"), "DMR unpack of our raw build");
        } else {
            // No layer of a tar build is titled, so no archive lands under a model file's name.
            for l in manifest["layers"].as_array().unwrap() {
                assert!(
                    l["annotations"]
                        .get("org.opencontainers.image.title")
                        .is_none(),
                    "{l}"
                );
            }
            for f in files_under(&model) {
                assert!(
                    !oras_out.join(&f).exists(),
                    "oras-py wrote archive bytes as {}",
                    f.display()
                );
            }
        }
    }
}

fn assert_same_tree_bytes(a: &Path, b: &Path, what: &str) {
    assert_eq!(tree(a), tree(b), "{what}");
}

#[test]
fn a_registry_configured_for_legacy_identifiers_gets_them_from_build_and_push() {
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let model = env.path("model");
    modelpack_common::modelfile::write_sample_model(&model, 1, 100_000).unwrap();
    let config = env.path("modelpack.toml");
    std::fs::write(
        &config,
        format!("[registries.\"{}\"]\nlegacy-cnai = true\n", reg.host),
    )
    .unwrap();
    let with_config = |args: &[&str]| {
        ok(
            env.mp()
                .env("MODELPACK_CONFIG", &config)
                .args(args)
                .output()
                .unwrap(),
            &args.join(" "),
        )
    };
    // build for that registry: cnai without a flag.
    let harbor = format!("{}/harbor/m:v1", reg.host);
    with_config(&["build", "-q", "-t", &harbor, model.to_str().unwrap()]);
    let m: Value = serde_json::from_str(&env.run(&["inspect", "--manifest", &harbor])).unwrap();
    assert_eq!(
        m["artifactType"],
        "application/vnd.cnai.model.manifest.v1+json"
    );
    // A cncf build pushed there is re-labelled: same blobs, cnai identifiers.
    let elsewhere = "localhost/team/m:v1";
    env.run(&["build", "-q", "-t", elsewhere, model.to_str().unwrap()]);
    let dest = format!("{}/harbor/relabelled:v1", reg.host);
    let pushed: Value =
        serde_json::from_str(&with_config(&["--json", "push", elsewhere, &dest])).unwrap();
    let remote: Value = serde_json::from_slice(&registry_get(
        reg.port,
        "/v2/harbor/relabelled/manifests/v1",
        "application/vnd.oci.image.manifest.v1+json",
    ))
    .unwrap();
    assert_eq!(
        remote["artifactType"],
        "application/vnd.cnai.model.manifest.v1+json"
    );
    assert_eq!(
        remote["config"]["mediaType"],
        "application/vnd.cnai.model.config.v1+json"
    );
    for l in remote["layers"].as_array().unwrap() {
        assert!(
            l["mediaType"]
                .as_str()
                .unwrap()
                .starts_with("application/vnd.cnai.model."),
            "{l}"
        );
        assert!(
            l["annotations"].get("org.cnai.model.filepath").is_some(),
            "{l}"
        );
        assert!(
            l["annotations"].get("org.cncf.model.filepath").is_none(),
            "{l}"
        );
    }
    let original: Value =
        serde_json::from_str(&env.run(&["inspect", "--manifest", elsewhere])).unwrap();
    let digests = |m: &Value| {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        digests(&original),
        digests(&remote),
        "the blobs are the same"
    );
    assert_eq!(
        original["artifactType"], "application/vnd.cncf.model.manifest.v1+json",
        "the source is untouched"
    );
    // The chunk index was re-bound to the new manifest, and the model reads back.
    let inspected = env.json(&["inspect", "--remote", &dest]);
    assert_eq!(inspected["digest"], pushed["digest"]);
    assert_eq!(
        inspected["chunkReferrers"].as_array().unwrap().len(),
        1,
        "{inspected}"
    );
    assert!(
        inspected["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["chunkIndex"]["binding"] == "bound"),
        "{inspected}"
    );
    let out = env.path("back");
    let fresh = Env::new();
    ok(
        fresh
            .mp()
            .args(["pull", &dest, "--extract-dir", out.to_str().unwrap()])
            .output()
            .unwrap(),
        "pull the re-labelled model",
    );
    assert_same_tree(&model, &out);
    // A typo in the config file is an error naming it, not a silent cncf build.
    std::fs::write(&config, "[registries.\"x\"]\nlegacy-cnia = true\n").unwrap();
    let err = fails(
        env.mp()
            .env("MODELPACK_CONFIG", &config)
            .args(["build", "-q", "-t", &harbor, model.to_str().unwrap()])
            .output()
            .unwrap(),
        "build with a bad config",
    );
    assert!(
        err.contains("modelpack.toml") && err.contains("legacy-cnia"),
        "{err}"
    );
}
