//! Chunk indexes end to end against real docker-registry 2.8 (no referrers
//! API, so the referrers tag schema is exercised): `build` binds an index to
//! the model and `push`/`build --output-remote` publish it; `pull` into
//! another store and `push` to another registry keep it; `modelpack index`
//! adds one to a modctl-style artifact by streaming its layers; `inspect`
//! shows the verdicts; a hostile referrer costs a warning, not the pull.
//! Indexes are checked here with plain HTTP and sha2, the way another
//! implementation would check them (docs/chunk-index.md).

use std::path::PathBuf;
use std::process::Command;

use modelpack_e2e::artifacts::{Artifact, Layer, MANIFEST_MT, TarEntry};
use modelpack_e2e::hostile_http::{digest_of, push_blob, put_manifest, request};
use modelpack_e2e::services::{Auth, Registry};
use modelpack_e2e::{ok, require_tool};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_docker-modelpack");
const CHUNKS: &str = "application/vnd.modelpack.chunks.v1+json";
const INDEX_MT: &str = "application/vnd.oci.image.index.v1+json";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        require_tool("docker-registry");
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn run_in(&self, store: &str, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .env("MODELPACK_HOME", self.path(store))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("HOME", self.path("home"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_AUTH_CONFIG")
            .args(args)
            .output()
            .unwrap();
        ok(out, &args.join(" "))
    }
    fn json_in(&self, store: &str, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let s = self.run_in(store, &a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{args:?}: {e}: {s}"))
    }
    fn json(&self, args: &[&str]) -> Value {
        self.json_in("store", args)
    }
    fn model(&self) -> PathBuf {
        let dir = self.path("model");
        if !dir.exists() {
            modelpack_common::modelfile::write_sample_model(&dir, 2, 3 << 20).unwrap();
        }
        dir
    }
}

fn get(port: u16, path: &str, accept: &str) -> (u16, Vec<u8>) {
    let r = request(port, "GET", path, &[("Accept", accept)], b"");
    (r.status, r.body)
}

fn get_json(port: u16, path: &str, accept: &str) -> Value {
    let (status, body) = get(port, path, accept);
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

/// The referrers of `subject` in `repo` by the tag schema (digests of chunk index ones).
fn tag_schema(port: u16, repo: &str, subject: &str) -> Vec<Value> {
    let tag = subject.replace(':', "-");
    let (status, body) = get(port, &format!("/v2/{repo}/manifests/{tag}"), INDEX_MT);
    if status == 404 {
        return vec![];
    }
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["manifests"].as_array().unwrap().clone()
}

fn blob(port: u16, repo: &str, digest: &str) -> Vec<u8> {
    let (status, body) = get(port, &format!("/v2/{repo}/blobs/{digest}"), "*/*");
    assert_eq!(status, 200, "blob {digest}");
    assert_eq!(digest_of(&body), digest);
    body
}

/// Checks an index blob the way another implementation would: media type,
/// the layer it names, and every chunk digest against the layer's bytes.
fn check_index(index: &Value, layer_bytes: &[u8]) {
    assert_eq!(index["mediaType"], CHUNKS);
    let cs = index["chunkSize"].as_u64().unwrap() as usize;
    let chunks = index["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), layer_bytes.len().div_ceil(cs));
    for (i, c) in chunks.iter().enumerate() {
        let end = ((i + 1) * cs).min(layer_bytes.len());
        assert_eq!(c.as_str().unwrap(), digest_of(&layer_bytes[i * cs..end]));
    }
    assert_eq!(index["layer"]["digest"], digest_of(layer_bytes).as_str());
    assert_eq!(index["layer"]["size"], layer_bytes.len() as u64);
}

fn bindings(inspect: &Value) -> Vec<String> {
    inspect["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["chunkIndex"]["binding"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn built_index_is_bound_published_and_survives_pull_and_push_elsewhere() {
    let env = Env::new();
    let a = Registry::start(&env.path("reg-a"), Auth::None);
    let b = Registry::start(&env.path("reg-b"), Auth::None);
    let r = format!("{}/models/tiny:v1", a.host);
    let model = env.model();
    let built = env.json(&[
        "build",
        "--chunk-size",
        "1MiB",
        "-t",
        &r,
        model.to_str().unwrap(),
    ]);
    let digest = built["digest"].as_str().unwrap().to_string();
    let referrer = built["chunkIndex"]
        .as_str()
        .expect("build made a referrer")
        .to_string();

    // Locally: every layer (all raw) bound, one referrer, hidden from ls.
    let ins = env.json(&["inspect", &r]);
    assert!(bindings(&ins).iter().all(|b| b == "bound"), "{ins}");
    assert_eq!(ins["chunkReferrers"], json!([referrer]));
    assert_eq!(env.json(&["ls"]).as_array().unwrap().len(), 1);

    // Push: found by the tag schema (2.8 has no referrers API).
    let pushed = env.json(&["push", &r]);
    assert_eq!(pushed["referrers"], json!([referrer]));
    let (status, _) = get(
        a.port,
        &format!("/v2/models/tiny/referrers/{digest}"),
        INDEX_MT,
    );
    assert_eq!(status, 404, "distribution 2.8 has no referrers API");
    let listed = tag_schema(a.port, "models/tiny", &digest);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["digest"], referrer.as_str());
    assert_eq!(listed[0]["artifactType"], CHUNKS);

    // The referrer names the model; each model layer's annotation names its index.
    let rm = get_json(
        a.port,
        &format!("/v2/models/tiny/manifests/{referrer}"),
        MANIFEST_MT,
    );
    assert_eq!(rm["subject"]["digest"], digest.as_str());
    assert_eq!(rm["artifactType"], CHUNKS);
    let mm = get_json(
        a.port,
        &format!("/v2/models/tiny/manifests/{digest}"),
        MANIFEST_MT,
    );
    let big = mm["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["size"].as_u64().unwrap() > 2 << 20)
        .unwrap()
        .clone();
    let bound = big["annotations"]["org.modelpack.chunks.digest"]
        .as_str()
        .unwrap();
    let entry = rm["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["digest"] == bound)
        .expect("the bound index is one of the referrer's layers");
    assert_eq!(
        entry["annotations"]["org.modelpack.chunks.layer"],
        big["digest"]
    );
    let index: Value = serde_json::from_slice(&blob(a.port, "models/tiny", bound)).unwrap();
    assert!(
        index["chunks"].as_array().unwrap().len() > 3,
        "a shard of 3 MiB plus its header, in 1 MiB chunks: {index}"
    );
    check_index(
        &index,
        &blob(a.port, "models/tiny", big["digest"].as_str().unwrap()),
    );

    // A re-push sends nothing and does not duplicate the tag schema entry.
    let again = env.json(&["push", &r]);
    assert_eq!(again["bytesSent"], 0, "{again}");
    assert_eq!(tag_schema(a.port, "models/tiny", &digest).len(), 1);

    // build --output-remote of the same context gives the same model and referrer.
    let direct = format!("{}/models/direct:v1", a.host);
    let remote = env.json(&[
        "build",
        "--output-remote",
        "--chunk-size",
        "1MiB",
        "-t",
        &direct,
        model.to_str().unwrap(),
    ]);
    assert_eq!(
        remote["digest"],
        digest.as_str(),
        "deterministic across local and remote builds"
    );
    assert_eq!(remote["referrers"], json!([referrer]));
    assert_eq!(tag_schema(a.port, "models/direct", &digest).len(), 1);

    // Pull into another store, push from there to another registry: the index travels.
    let pulled = env.json_in("store2", &["pull", &r]);
    assert_eq!(pulled["chunkIndexes"], 1, "{pulled}");
    let ins2 = env.json_in("store2", &["inspect", &r]);
    assert!(bindings(&ins2).iter().all(|b| b == "bound"), "{ins2}");
    let rb = format!("{}/copy/tiny:v1", b.host);
    env.run_in("store2", &["tag", &r, &rb]);
    let pushed_b = env.json_in("store2", &["push", &rb]);
    assert_eq!(pushed_b["referrers"], json!([referrer]));
    assert_eq!(tag_schema(b.port, "copy/tiny", &digest).len(), 1);
    let remote_ins = env.json_in("store3", &["inspect", "--remote", &rb]);
    assert!(
        bindings(&remote_ins).iter().all(|b| b == "bound"),
        "{remote_ins}"
    );
    assert_eq!(remote_ins["chunkReferrers"], json!([referrer]));
    assert_eq!(remote_ins["layers"][0]["chunkIndex"]["chunkSize"], 1 << 20);

    // rm drops the referrer with its model, so prune frees everything.
    env.run_in("store", &["rm", &r]);
    let pruned = env.json(&["prune"]);
    assert!(pruned["bytes"].as_u64().unwrap() > 6 << 20, "{pruned}");
    let left = std::fs::read_dir(env.path("store/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "no blob kept alive by an orphaned referrer");
}

fn foreign_artifact() -> (Artifact, Vec<u8>, Vec<TarEntry>) {
    let weights: Vec<u8> = (0..(3u32 << 20) + 123)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let entries = vec![
        TarEntry::dir("tok"),
        TarEntry::file("tok/tokenizer.json", &[b'{'; 70_000]),
        TarEntry::file("tok/merges.txt", b"a b\nc d\n"),
    ];
    let mut gz = Layer::raw("docs.tgz", b"not really gzip");
    gz.media_type = "application/vnd.cncf.model.doc.v1.tar+gzip".into();
    let art = Artifact::new(vec![
        Layer::raw("model.safetensors", &weights),
        Layer::tar("tok", &entries),
        gz,
    ]);
    (art, weights, entries)
}

#[test]
fn index_adds_an_unbound_index_to_a_foreign_artifact_and_pin_trusts_it() {
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let (art, weights, entries) = foreign_artifact();
    let pushed = art.push(reg.port, &reg.dir, "modctl/m");
    let subject = pushed.manifest_digest.clone();
    // Another tool's referrer already in the tag schema must survive our update.
    push_blob(reg.port, "modctl/m", b"{}");
    let sig = json!({"schemaVersion": 2, "mediaType": MANIFEST_MT,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": digest_of(b"{}"), "size": 2},
        "layers": [],
        "subject": {"mediaType": MANIFEST_MT, "digest": subject, "size": pushed.manifest.len()}});
    let sig = serde_json::to_vec(&sig).unwrap();
    assert_eq!(
        put_manifest(reg.port, "modctl/m", &digest_of(&sig), MANIFEST_MT, &sig).status,
        201
    );
    let list = json!({"schemaVersion": 2, "mediaType": INDEX_MT, "manifests": [
        {"mediaType": MANIFEST_MT, "digest": digest_of(&sig), "size": sig.len(),
         "artifactType": "application/vnd.example.signature"}]});
    let tag = subject.replace(':', "-");
    let list = serde_json::to_vec(&list).unwrap();
    assert_eq!(
        put_manifest(reg.port, "modctl/m", &tag, INDEX_MT, &list).status,
        201
    );

    let out = env.json(&["index", &pushed.reference, "--chunk-size", "64KiB", "--pin"]);
    let referrer = out["referrer"].as_str().unwrap().to_string();
    assert_eq!(out["pinned"], true);
    let layers = out["layers"].as_array().unwrap();
    assert_eq!(
        layers[0]["chunks"], 49,
        "3 MiB + 123 bytes in 64 KiB chunks: {out}"
    );
    assert_eq!(layers[0]["source"], "downloaded");
    assert_eq!(layers[1]["files"], 2, "{out}");
    assert!(
        layers[2]["index"].is_null(),
        "compressed layers get no index: {out}"
    );
    assert_eq!(
        out["bytesReceived"].as_u64().unwrap(),
        weights.len() as u64 + art.layers[1].bytes.len() as u64
    );
    // Streamed, not stored.
    let hex = &art.layers[0].digest()[7..];
    assert!(!env.path(&format!("store/blobs/sha256/{hex}")).exists());

    // Both referrers listed; ours checks out byte for byte.
    let listed = tag_schema(reg.port, "modctl/m", &subject);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .any(|e| e["digest"] == digest_of(&sig).as_str())
    );
    let rm = get_json(
        reg.port,
        &format!("/v2/modctl/m/manifests/{referrer}"),
        MANIFEST_MT,
    );
    let idx_of = |layer: &Layer| -> Value {
        let e = rm["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["annotations"]["org.modelpack.chunks.layer"] == layer.digest().as_str())
            .unwrap();
        serde_json::from_slice(&blob(reg.port, "modctl/m", e["digest"].as_str().unwrap())).unwrap()
    };
    check_index(&idx_of(&art.layers[0]), &weights);
    let tar_idx = idx_of(&art.layers[1]);
    check_index(&tar_idx, &art.layers[1].bytes);
    for f in tar_idx["files"].as_array().unwrap() {
        let e = entries
            .iter()
            .find(|e| e.name == f["path"].as_str().unwrap().as_bytes())
            .unwrap();
        let at = f["offset"].as_u64().unwrap() as usize;
        assert_eq!(
            &art.layers[1].bytes[at..at + e.data.len()],
            &e.data[..],
            "{f}"
        );
    }

    // Pinned here; unbound for a store without the pin; compressed layer none.
    let ins = env.json(&["inspect", "--remote", &pushed.reference]);
    assert_eq!(bindings(&ins), ["pinned", "pinned", "none"], "{ins}");
    let other = env.json_in("store2", &["inspect", "--remote", &pushed.reference]);
    assert_eq!(bindings(&other), ["unbound", "unbound", "none"], "{other}");

    // Pull carries the unbound index along; push to another repository keeps it.
    let pulled = env.json_in("store2", &["pull", &pushed.reference]);
    assert_eq!(pulled["chunkIndexes"], 1, "{pulled}");
    let local = env.json_in("store2", &["inspect", &pushed.reference]);
    assert_eq!(bindings(&local), ["unbound", "unbound", "none"], "{local}");
    let copy = format!("{}/copy/m:v1", reg.host);
    env.run_in("store2", &["tag", &pushed.reference, &copy]);
    let p = env.json_in("store2", &["push", &copy]);
    assert_eq!(p["referrers"], json!([referrer]));
    assert_eq!(tag_schema(reg.port, "copy/m", &subject).len(), 1);
}

#[test]
fn a_hostile_referrer_costs_a_warning_not_the_pull() {
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let (art, _, _) = foreign_artifact();
    let pushed = art.push(reg.port, &reg.dir, "hostile/m");
    let layer = &art.layers[0];
    // An index claiming two chunks for a 49-chunk layer.
    let bad = format!(
        r#"{{"chunkSize":65536,"chunks":["{d}","{d}"],"files":[],"format":"raw","layer":{{"digest":"{l}","mediaType":"{mt}","size":{s}}},"mediaType":"{CHUNKS}"}}"#,
        d = digest_of(b"x"),
        l = layer.digest(),
        mt = layer.media_type,
        s = layer.bytes.len()
    );
    push_blob(reg.port, "hostile/m", bad.as_bytes());
    push_blob(reg.port, "hostile/m", b"{}");
    let rm = json!({"schemaVersion": 2, "mediaType": MANIFEST_MT, "artifactType": CHUNKS,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(b"{}"), "size": 2},
        "layers": [{"mediaType": CHUNKS, "digest": digest_of(bad.as_bytes()), "size": bad.len(),
                    "annotations": {"org.modelpack.chunks.layer": layer.digest()}}],
        "subject": {"mediaType": MANIFEST_MT, "digest": pushed.manifest_digest, "size": pushed.manifest.len()}});
    let rm = serde_json::to_vec(&rm).unwrap();
    assert_eq!(
        put_manifest(reg.port, "hostile/m", &digest_of(&rm), MANIFEST_MT, &rm).status,
        201
    );
    let list = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": INDEX_MT, "manifests": [
        {"mediaType": MANIFEST_MT, "digest": digest_of(&rm), "size": rm.len(), "artifactType": CHUNKS}]}))
    .unwrap();
    let tag = pushed.manifest_digest.replace(':', "-");
    assert_eq!(
        put_manifest(reg.port, "hostile/m", &tag, INDEX_MT, &list).status,
        201
    );

    let pulled = env.json(&["pull", &pushed.reference]);
    assert_eq!(pulled["digest"], pushed.manifest_digest.as_str());
    assert_eq!(pulled["chunkIndexes"], 0, "{pulled}");
    let w = pulled["warnings"][0].as_str().unwrap();
    assert!(w.contains("chunks") || w.contains("chunk"), "{w}");
    let ins = env.json(&["inspect", &pushed.reference]);
    assert_eq!(bindings(&ins), ["none", "none", "none"], "{ins}");
}

#[test]
fn bound_indexes_are_found_by_digest_when_the_tag_schema_is_gone() {
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let r = format!("{}/models/lost:v1", reg.host);
    let built = env.json(&["build", "-t", &r, env.model().to_str().unwrap()]);
    let digest = built["digest"].as_str().unwrap().to_string();
    let referrer = built["chunkIndex"].as_str().unwrap().to_string();
    env.json(&["push", &r]);
    // Delete the tag schema index (and so its tag), as a registry GC or a
    // copy tool that ignores referrers would leave things.
    let tag = digest.replace(':', "-");
    let (_, list) = get(
        reg.port,
        &format!("/v2/models/lost/manifests/{tag}"),
        INDEX_MT,
    );
    let del = request(
        reg.port,
        "DELETE",
        &format!("/v2/models/lost/manifests/{}", digest_of(&list)),
        &[],
        b"",
    );
    assert_eq!(del.status, 202);
    assert!(tag_schema(reg.port, "models/lost", &digest).is_empty());
    let pulled = env.json_in("store2", &["pull", &r]);
    assert_eq!(pulled["chunkIndexes"], 1, "{pulled}");
    let ins = env.json_in("store2", &["inspect", &r]);
    assert!(bindings(&ins).iter().all(|b| b == "bound"), "{ins}");
    // The rebuilt referrer is the one build made, bit for bit.
    assert_eq!(ins["chunkReferrers"], json!([referrer]));
}
