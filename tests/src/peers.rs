//! Byte-faithful reproductions of what the peer tools push, built from their
//! source (see docs/compatibility.md for the files each detail comes from):
//! JSON in Go's field order (`encoding/json` marshals struct fields in
//! declaration order and map keys sorted), Go `archive/tar` USTAR headers
//! (KitOps: uid 1000, gid 0, mtime 0, permission bits only, directory
//! entries without a trailing slash; DMR's config tar: base names, uid 0,
//! real mtimes), and each tool's annotations — or their absence.
//!
//! Each fixture also says which files a correct reader restores
//! ([`PeerArtifact::expected`]), so a test compares bytes, not just exit codes.

use std::collections::BTreeMap;

use crate::hostile_http::{digest_of, push_blob, put_manifest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A pushed-or-pushable peer artifact.
pub struct PeerArtifact {
    pub name: &'static str,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub blobs: Vec<Vec<u8>>,
    /// Relative path → bytes a reader must restore.
    pub expected: BTreeMap<String, Vec<u8>>,
}

impl PeerArtifact {
    /// Pushes blobs, config and manifest as `repo:v1`; returns the reference.
    pub fn push(&self, port: u16, repo: &str) -> String {
        push_blob(port, repo, &self.config);
        for b in &self.blobs {
            push_blob(port, repo, b);
        }
        let r = put_manifest(port, repo, "v1", OCI_MANIFEST, &self.manifest);
        assert_eq!(
            r.status,
            201,
            "registry refused the {} manifest: {}",
            self.name,
            String::from_utf8_lossy(&r.body)
        );
        format!("127.0.0.1:{port}/{repo}:v1")
    }
}

// ------------------------------------------------------------ Go tar writer

/// One USTAR entry as Go's `tar.Writer` writes it for a header with the
/// given fields (Format unset, no PAX needed: names ≤ 100 bytes, ASCII).
pub struct GoTarEntry {
    pub name: String,
    pub dir: bool,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub data: Vec<u8>,
    /// Owner names (Go's `FileInfoHeader` looks them up; KitOps and DMR leave them empty).
    pub uname: String,
    pub gname: String,
}

fn octal(field: &mut [u8], v: u64) {
    // Go: zero-padded octal, NUL-terminated, filling the field.
    let s = format!("{:0width$o}\0", v, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// The archive: entries, then exactly two zero blocks (Go pads no record).
pub fn go_tar(entries: &[GoTarEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        octal(&mut h[100..108], e.mode as u64);
        octal(&mut h[108..116], e.uid as u64);
        octal(&mut h[116..124], e.gid as u64);
        octal(
            &mut h[124..136],
            if e.dir { 0 } else { e.data.len() as u64 },
        );
        octal(&mut h[136..148], e.mtime);
        h[156] = if e.dir { b'5' } else { b'0' };
        h[257..263].copy_from_slice(b"ustar\0");
        h[265..265 + e.uname.len()].copy_from_slice(e.uname.as_bytes());
        h[297..297 + e.gname.len()].copy_from_slice(e.gname.as_bytes());
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], 0);
        octal(&mut h[337..345], 0);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        // Go writes the checksum as 6 octal digits, NUL, space.
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        if !e.dir {
            out.extend_from_slice(&e.data);
            while out.len() % 512 != 0 {
                out.push(0);
            }
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    // Go's gzip.Writer at the default level; the exact compressed bytes do not
    // matter to a reader, only that it is gzip over these tar bytes.
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

// ------------------------------------------------------------ Go JSON pieces

/// An image-spec Go descriptor as DMR marshals it (`mediaType, size, digest`, then annotations).
fn dmr_descriptor(media_type: &str, blob: &[u8], annotations: &[(&str, String)]) -> String {
    let mut s = format!(
        r#"{{"mediaType":"{media_type}","size":{},"digest":"{}""#,
        blob.len(),
        digest_of(blob)
    );
    if !annotations.is_empty() {
        s.push_str(&format!(r#","annotations":{}"#, go_map(annotations)));
    }
    s.push('}');
    s
}

/// An opencontainers image-spec descriptor (`mediaType, digest, size, annotations`), as KitOps marshals it.
fn oci_descriptor(media_type: &str, blob: &[u8], annotations: &[(&str, String)]) -> String {
    let mut s = format!(
        r#"{{"mediaType":"{media_type}","digest":"{}","size":{}"#,
        digest_of(blob),
        blob.len()
    );
    if !annotations.is_empty() {
        s.push_str(&format!(r#","annotations":{}"#, go_map(annotations)));
    }
    s.push('}');
    s
}

/// A Go `map[string]string`: keys sorted, values JSON-escaped.
fn go_map(entries: &[(&str, String)]) -> String {
    let sorted: BTreeMap<&str, &String> = entries.iter().map(|(k, v)| (*k, v)).collect();
    let parts: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("\"{k}\":{}", serde_json::to_string(v).unwrap()))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// DMR's `FileMetadata` annotation value (Go field order; typeflag numeric 0).
fn dmr_metadata(name: &str, size: usize, mtime: &str) -> String {
    format!(
        r#"{{"name":"{name}","mode":420,"uid":0,"gid":0,"size":{size},"mtime":"{mtime}","typeflag":0}}"#
    )
}

/// The three annotations every DMR builder layer has had since v1.0.4.
fn dmr_annotations(path: &str, blob: &[u8]) -> Vec<(&'static str, String)> {
    let base = path.rsplit('/').next().unwrap();
    vec![
        ("org.cncf.model.file.mediatype.untested", "false".into()),
        (
            "org.cncf.model.file.metadata+json",
            dmr_metadata(base, blob.len(), "2025-12-01T09:30:12.123456789+01:00"),
        ),
        ("org.cncf.model.filepath", path.into()),
    ]
}

fn diff_ids(blobs: &[&[u8]]) -> String {
    let ids: Vec<String> = blobs
        .iter()
        .map(|b| format!("\"{}\"", digest_of(b)))
        .collect();
    ids.join(",")
}

fn gguf_bytes(tag: &str, n: usize) -> Vec<u8> {
    let mut v = b"GGUF\x03\x00\x00\x00".to_vec();
    v.extend((0..n).map(|i| (i * 31 + tag.len()) as u8));
    v.extend_from_slice(tag.as_bytes());
    v
}

// ------------------------------------------------------------ Docker Model Runner

const DMR_V01: &str = "application/vnd.docker.ai.model.config.v0.1+json";
const DMR_V02: &str = "application/vnd.docker.ai.model.config.v0.2+json";

/// `docker model package --gguf` before v1.0.4 (Docker Hub `ai/*` of that
/// time): three GGUF shards, a licence, a projector and a chat template,
/// config v0.1, **no layer annotations**, no artifactType. Files are named
/// by type as DMR's `unpackLegacy` names them (licence: ours, see dmr.rs).
pub fn dmr_gguf_unannotated() -> PeerArtifact {
    let shards: Vec<Vec<u8>> = (1..=3)
        .map(|i| gguf_bytes(&format!("shard{i}"), 4000 + i))
        .collect();
    let license = b"Apache License 2.0\n".to_vec();
    let mmproj = gguf_bytes("mmproj", 777);
    let template = b"{% for m in messages %}{{ m.content }}{% endfor %}".to_vec();
    let mut layers: Vec<(String, &[u8])> = shards
        .iter()
        .map(|s| {
            (
                "application/vnd.docker.ai.gguf.v3".to_string(),
                s.as_slice(),
            )
        })
        .collect();
    layers.push(("application/vnd.docker.ai.license".into(), &license));
    layers.push(("application/vnd.docker.ai.mmproj".into(), &mmproj));
    layers.push((
        "application/vnd.docker.ai.chat.template.jinja".into(),
        &template,
    ));
    let blobs: Vec<&[u8]> = layers.iter().map(|(_, b)| *b).collect();
    let config = format!(
        r#"{{"config":{{"format":"gguf","quantization":"Q4_K_M","parameters":"8.03B","architecture":"llama","size":"4.58GiB","gguf":{{"general.architecture":"llama","llama.context_length":"131072"}}}},"descriptor":{{"created":"2025-06-02T11:22:33.123456789Z"}},"rootfs":{{"type":"rootfs","diff_ids":[{}]}}}}"#,
        diff_ids(&blobs)
    )
    .into_bytes();
    let descs: Vec<String> = layers
        .iter()
        .map(|(mt, b)| dmr_descriptor(mt, b, &[]))
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
        dmr_descriptor(DMR_V01, &config, &[]),
        descs.join(",")
    )
    .into_bytes();
    let mut expected = BTreeMap::new();
    for (i, s) in shards.iter().enumerate() {
        expected.insert(format!("model-{:05}-of-00003.gguf", i + 1), s.clone());
    }
    expected.insert("LICENSE".into(), license.clone());
    expected.insert("model.mmproj".into(), mmproj.clone());
    expected.insert("template.jinja".into(), template.clone());
    PeerArtifact {
        name: "DMR v0.1 gguf, no annotations",
        manifest,
        config,
        blobs: layers.iter().map(|(_, b)| b.to_vec()).collect(),
        expected,
    }
}

/// `docker model package --safetensors-dir` of v1.0.4–v1.0.18: config v0.1,
/// two `safetensors` shards (base-name filepath), the top-level config files
/// in one `vllm.config.tar` (Go tar: base names, no directories, uid 0, real
/// mtimes in seconds; filepath = its temp name), and a licence.
pub fn dmr_safetensors_vllm_tar() -> PeerArtifact {
    let shards: Vec<Vec<u8>> = (1..=2).map(|i| vec![i as u8; 6000 + i]).collect();
    let config_json = br#"{"architectures":["LlamaForCausalLM"],"model_type":"llama"}"#.to_vec();
    let tokenizer = br#"{"version":"1.0","model":{"type":"BPE"}}"#.to_vec();
    let tar = go_tar(&[
        GoTarEntry {
            name: "config.json".into(),
            dir: false,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_764_578_000,
            data: config_json.clone(),
            uname: String::new(),
            gname: String::new(),
        },
        GoTarEntry {
            name: "tokenizer.json".into(),
            dir: false,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_764_578_001,
            data: tokenizer.clone(),
            uname: String::new(),
            gname: String::new(),
        },
    ]);
    let license = b"MIT License\n".to_vec();
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut descs = Vec::new();
    for (n, s) in names.iter().zip(&shards) {
        descs.push(dmr_descriptor(
            "application/vnd.docker.ai.safetensors",
            s,
            &dmr_annotations(n, s),
        ));
    }
    descs.push(dmr_descriptor(
        "application/vnd.docker.ai.vllm.config.tar",
        &tar,
        &dmr_annotations("vllm-config-3318201.tar", &tar),
    ));
    descs.push(dmr_descriptor(
        "application/vnd.docker.ai.license",
        &license,
        &dmr_annotations("LICENSE", &license),
    ));
    let blobs: Vec<&[u8]> = vec![&shards[0], &shards[1], &tar, &license];
    let config = format!(
        r#"{{"config":{{"format":"safetensors","parameters":"8.00B","architecture":"llama","size":"16.07GB","safetensors":{{"total_size":"12"}}}},"descriptor":{{"created":"2025-12-01T09:30:12.123456789+01:00"}},"rootfs":{{"type":"rootfs","diff_ids":[{}]}}}}"#,
        diff_ids(&blobs)
    )
    .into_bytes();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
        dmr_descriptor(DMR_V01, &config, &[]),
        descs.join(",")
    )
    .into_bytes();
    let mut expected = BTreeMap::new();
    for (n, s) in names.iter().zip(&shards) {
        expected.insert(n.to_string(), s.clone());
    }
    expected.insert("config.json".into(), config_json);
    expected.insert("tokenizer.json".into(), tokenizer);
    expected.insert("LICENSE".into(), license.clone());
    PeerArtifact {
        name: "DMR v0.1 safetensors + vllm.config.tar",
        manifest,
        config,
        blobs: blobs.iter().map(|b| b.to_vec()).collect(),
        expected,
    }
}

/// `docker model package --safetensors-dir` since v1.0.19: config v0.2, one
/// layer per file typed by `files.Classify`, relative filepaths.
pub fn dmr_v02_directory() -> PeerArtifact {
    let files: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "application/vnd.docker.ai.model.file",
            "config.json",
            br#"{"model_type":"qwen2"}"#.to_vec(),
        ),
        (
            "application/vnd.docker.ai.license",
            "LICENSE",
            b"Apache-2.0\n".to_vec(),
        ),
        (
            "application/vnd.docker.ai.safetensors",
            "model.safetensors",
            vec![9u8; 9000],
        ),
        (
            "application/vnd.docker.ai.chat.template.jinja",
            "templates/chat_template.jinja",
            b"{{ messages }}".to_vec(),
        ),
        (
            "application/vnd.docker.ai.model.file",
            "tokenizer/tokenizer.json",
            br#"{"added_tokens":[]}"#.to_vec(),
        ),
    ];
    let descs: Vec<String> = files
        .iter()
        .map(|(mt, p, b)| dmr_descriptor(mt, b, &dmr_annotations(p, b)))
        .collect();
    let blobs: Vec<&[u8]> = files.iter().map(|(_, _, b)| b.as_slice()).collect();
    let config = format!(
        r#"{{"config":{{"format":"safetensors","parameters":"494.03M","architecture":"qwen2","size":"988.10MB"}},"descriptor":{{"created":"2026-03-01T08:00:00Z"}},"rootfs":{{"type":"rootfs","diff_ids":[{}]}}}}"#,
        diff_ids(&blobs)
    )
    .into_bytes();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
        dmr_descriptor(DMR_V02, &config, &[]),
        descs.join(",")
    )
    .into_bytes();
    PeerArtifact {
        name: "DMR v0.2 directory",
        manifest,
        config,
        blobs: blobs.iter().map(|b| b.to_vec()).collect(),
        expected: files
            .iter()
            .map(|(_, p, b)| (p.to_string(), b.clone()))
            .collect(),
    }
}

/// `docker model package --format cncf` (v1.1.36+): ModelPack, raw layers,
/// DMR's annotations (no title), `paramSize` copied verbatim ("8.03B"),
/// config in `descriptor, modelfs, config` order.
pub fn dmr_cncf() -> PeerArtifact {
    let gguf = gguf_bytes("cncf", 5000);
    let license = b"Llama 3.1 Community License\n".to_vec();
    let descs = [
        oci_like_dmr(
            "application/vnd.cncf.model.weight.v1.raw",
            &gguf,
            "model.gguf",
        ),
        oci_like_dmr("application/vnd.cncf.model.doc.v1.raw", &license, "LICENSE"),
    ];
    let config = format!(
        r#"{{"descriptor":{{"createdAt":"2026-04-20T10:00:00.5Z","family":"llama"}},"modelfs":{{"type":"layers","diffIds":[{}]}},"config":{{"architecture":"llama","format":"gguf","paramSize":"8.03B","quantization":"Q4_K_M"}}}}"#,
        diff_ids(&[&gguf, &license])
    )
    .into_bytes();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.cncf.model.manifest.v1+json","config":{},"layers":[{}]}}"#,
        dmr_descriptor("application/vnd.cncf.model.config.v1+json", &config, &[]),
        descs.join(",")
    )
    .into_bytes();
    let mut expected = BTreeMap::new();
    expected.insert("model.gguf".into(), gguf.clone());
    expected.insert("LICENSE".into(), license.clone());
    PeerArtifact {
        name: "DMR --format cncf",
        manifest,
        config,
        blobs: vec![gguf, license],
        expected,
    }
}

fn oci_like_dmr(media_type: &str, blob: &[u8], path: &str) -> String {
    dmr_descriptor(media_type, blob, &dmr_annotations(path, blob))
}

// ------------------------------------------------------------ KitOps

const KIT_CONFIG: &str = "application/vnd.kitops.modelkit.config.v1+json";

fn kit_entry(name: &str, data: Option<&[u8]>) -> GoTarEntry {
    GoTarEntry {
        name: name.into(),
        dir: data.is_none(),
        mode: if data.is_none() { 0o755 } else { 0o644 },
        uid: 1000,
        gid: 0,
        mtime: 0,
        data: data.map(<[u8]>::to_vec).unwrap_or_default(),
        uname: String::new(),
        gname: String::new(),
    }
}

/// `kit pack` v1.7.0: no artifactType, no layer annotations, tar layers with
/// context-relative entries (ancestor directories included), one docs layer
/// gzip-compressed (`--compression gzip` applies to all layers in kit; mixed
/// here to cover both decoders), the Kitfile as config with each entry's
/// `digest`/`diffId`.
pub fn kitops_v17() -> PeerArtifact {
    kitops(false)
}

/// `kit pack` of 2026 (v1.1x): artifactType set, `org.cncf.model.filepath`
/// on tar layers, a raw code layer with the metadata annotation (typeflag 48).
pub fn kitops_newer() -> PeerArtifact {
    kitops(true)
}

/// A KitOps layer: media type, blob, annotations.
type KitLayer<'a> = (&'a str, &'a [u8], Vec<(&'static str, String)>);

fn kitops(newer: bool) -> PeerArtifact {
    let weights = gguf_bytes("kit", 7000);
    let part = br#"{"vocab_size":32000}"#.to_vec();
    let readme = b"# tiny\nA tiny model.\n".to_vec();
    let data = b"{\"text\":\"hello\"}\n{\"text\":\"world\"}\n".to_vec();
    let script = b"print('hi')\n".to_vec();
    let model_tar = go_tar(&[
        kit_entry("models", None),
        kit_entry("models/tiny.gguf", Some(&weights)),
    ]);
    let part_tar = go_tar(&[
        kit_entry("models", None),
        kit_entry("models/config.json", Some(&part)),
    ]);
    let docs_tar = go_tar(&[kit_entry("README.md", Some(&readme))]);
    let docs_gz = gzip(&docs_tar);
    let data_tar = go_tar(&[
        kit_entry("data", None),
        kit_entry("data/train", None),
        kit_entry("data/train/part-0.jsonl", Some(&data)),
    ]);
    let (code_mt, code_blob) = if newer {
        (
            "application/vnd.kitops.modelkit.code.v1.raw",
            script.clone(),
        )
    } else {
        (
            "application/vnd.kitops.modelkit.code.v1.tar",
            go_tar(&[kit_entry("run.py", Some(&script))]),
        )
    };
    // kit's layer order: model, modelparts, code, datasets, docs.
    let layers: Vec<KitLayer> = vec![
        (
            "application/vnd.kitops.modelkit.model.v1.tar",
            &model_tar,
            filepath_if(newer, "models/tiny.gguf"),
        ),
        (
            "application/vnd.kitops.modelkit.modelpart.v1.tar",
            &part_tar,
            filepath_if(newer, "models/config.json"),
        ),
        (
            code_mt,
            &code_blob,
            if newer {
                vec![
                    ("org.cncf.model.filepath", "run.py".into()),
                    (
                        "org.cncf.model.file.metadata+json",
                        format!(
                            r#"{{"name":"run.py","mode":420,"uid":0,"gid":0,"size":{},"mtime":"2026-05-05T05:05:05Z","typeflag":48}}"#,
                            script.len()
                        ),
                    ),
                ]
            } else {
                vec![]
            },
        ),
        (
            "application/vnd.kitops.modelkit.dataset.v1.tar",
            &data_tar,
            filepath_if(newer, "data"),
        ),
        (
            "application/vnd.kitops.modelkit.docs.v1.tar+gzip",
            &docs_gz,
            filepath_if(newer, "README.md"),
        ),
    ];
    let info = |blob: &[u8], diff: &[u8]| {
        format!(
            r#""digest":"{}","diffId":"{}""#,
            digest_of(blob),
            digest_of(diff)
        )
    };
    let config = format!(
        r#"{{"manifestVersion":"1.0.0","package":{{"name":"tiny","version":"1.2.0","description":"A tiny test model","license":"Apache-2.0","authors":["Jozu"]}},"model":{{"name":"tiny-llm","path":"models/tiny.gguf","license":"Apache-2.0","framework":"llama.cpp","format":"gguf","parts":[{{"path":"models/config.json",{}}}],{}}},"code":[{{"path":"run.py","description":"runner",{}}}],"datasets":[{{"name":"train","path":"data",{}}}],"docs":[{{"path":"README.md",{}}}]}}"#,
        info(&part_tar, &part_tar),
        info(&model_tar, &model_tar),
        info(&code_blob, &code_blob),
        info(&data_tar, &data_tar),
        info(&docs_gz, &docs_tar),
    )
    .into_bytes();
    let descs: Vec<String> = layers
        .iter()
        .map(|(mt, b, a)| oci_descriptor(mt, b, a))
        .collect();
    let artifact_type = if newer {
        r#""artifactType":"application/vnd.kitops.modelkit.manifest.v1+json","#
    } else {
        ""
    };
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",{artifact_type}"config":{},"layers":[{}],"annotations":{{"ml.kitops.modelkit.cli-version":"{}"}}}}"#,
        oci_descriptor(KIT_CONFIG, &config, &[]),
        descs.join(","),
        if newer { "1.11.0" } else { "1.7.0" }
    )
    .into_bytes();
    let mut expected = BTreeMap::new();
    expected.insert("models/tiny.gguf".into(), weights);
    expected.insert("models/config.json".into(), part);
    expected.insert("run.py".into(), script);
    expected.insert("data/train/part-0.jsonl".into(), data);
    expected.insert("README.md".into(), readme);
    PeerArtifact {
        name: if newer {
            "KitOps 2026"
        } else {
            "KitOps v1.7.0"
        },
        manifest,
        config,
        blobs: layers.iter().map(|(_, b, _)| b.to_vec()).collect(),
        expected,
    }
}

fn filepath_if(yes: bool, path: &str) -> Vec<(&'static str, String)> {
    if yes {
        vec![("org.cncf.model.filepath", path.into())]
    } else {
        vec![]
    }
}

// ------------------------------------------------------------ modctl

/// One file of a modctl build: Modelfile kind, path in the context, bytes, mode.
struct ModctlFile {
    kind: &'static str,
    path: &'static str,
    bytes: Vec<u8>,
    mode: u32,
}

/// How modctl packed it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ModctlFlavour {
    /// modctl main / v0.2.0–v0.2.1 default (`--raw`): cncf, raw layers.
    Raw,
    /// `--raw=false`: one Go tar per file, real owner, mode and mtime.
    Tar,
    /// modctl ≤ v0.1.2 (dragonflyoss/model-spec v0.0.6): cnai identifiers,
    /// `org.cnai.*` annotations, snake_case `modelfs.diff_ids`, raw layers.
    LegacyCnai,
    /// `modctl attach --destination-dir extra --raw=false notes.txt` on top of
    /// a raw build: the annotation says `extra/notes.txt`, the tar entry
    /// `notes.txt` (modctl's extract follows the tar), and layers re-sorted
    /// by path (attach's `sortLayers` knows only `.tar` types).
    AttachDestDir,
}

const MODCTL_MTIME: &str = "2026-03-14T09:26:53.589793238+08:00";
const MODCTL_MTIME_SECS: u64 = 1_773_451_613;

fn modctl_files() -> Vec<ModctlFile> {
    vec![
        ModctlFile {
            kind: "weight.config",
            path: "config.json",
            bytes: br#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","torch_dtype":"bfloat16","transformers_version":"4.51.0"}"#.to_vec(),
            mode: 0o644,
        },
        ModctlFile {
            kind: "weight.config",
            path: "tokenizer/tokenizer.json",
            bytes: br#"{"version":"1.0","model":{"type":"BPE","vocab":{}}}"#.to_vec(),
            mode: 0o644,
        },
        ModctlFile {
            kind: "weight",
            path: "model.safetensors",
            bytes: (0..9000u32).map(|i| (i * 7 % 251) as u8).collect(),
            mode: 0o644,
        },
        ModctlFile {
            kind: "code",
            path: "run.py",
            bytes: b"#!/usr/bin/env python3\nprint('qwen')\n".to_vec(),
            mode: 0o755,
        },
        ModctlFile {
            kind: "doc",
            path: "README.md",
            bytes: b"# qwen-tiny\n".to_vec(),
            mode: 0o644,
        },
    ]
}

/// modctl's `addFileMetadata` value (Go field order; mode in decimal).
fn modctl_metadata(name: &str, mode: u32, size: usize) -> String {
    format!(
        r#"{{"name":"{name}","mode":{mode},"uid":1001,"gid":1001,"size":{size},"mtime":"{MODCTL_MTIME}","typeflag":0}}"#
    )
}

/// Go's `tar.FileInfoHeader` of one file, named by its context path.
fn modctl_tar(name: &str, mode: u32, bytes: &[u8]) -> Vec<u8> {
    go_tar(&[GoTarEntry {
        name: name.into(),
        dir: false,
        mode,
        uid: 1001,
        gid: 1001,
        mtime: MODCTL_MTIME_SECS,
        data: bytes.to_vec(),
        uname: "runner".into(),
        gname: "runner".into(),
    }])
}

/// What modctl pushes for [`modctl_files`] in the given flavour.
pub fn modctl(flavour: ModctlFlavour) -> PeerArtifact {
    let legacy = flavour == ModctlFlavour::LegacyCnai;
    let family = if legacy { "cnai" } else { "cncf" };
    let tar = flavour == ModctlFlavour::Tar;
    let mut files = modctl_files();
    // Group order config → weights → code → docs, each sorted by path.
    let rank = |k: &str| {
        ["weight.config", "weight", "code", "doc"]
            .iter()
            .position(|x| *x == k)
    };
    files.sort_by(|a, b| (rank(a.kind), a.path).cmp(&(rank(b.kind), b.path)));
    let mut layers: Vec<(String, Vec<u8>, String)> = Vec::new(); // (media type, blob, filepath)
    let mut metas = Vec::new();
    for f in &files {
        let blob = if tar {
            modctl_tar(f.path, f.mode, &f.bytes)
        } else {
            f.bytes.clone()
        };
        let format = if tar { "tar" } else { "raw" };
        layers.push((
            format!("application/vnd.{family}.model.{}.v1.{format}", f.kind),
            blob,
            f.path.to_string(),
        ));
        let base = f.path.rsplit('/').next().unwrap();
        metas.push(modctl_metadata(base, f.mode, f.bytes.len()));
    }
    let mut expected: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|f| (f.path.to_string(), f.bytes.clone()))
        .collect();
    if flavour == ModctlFlavour::AttachDestDir {
        let notes = b"attached later\n".to_vec();
        layers.push((
            "application/vnd.cncf.model.doc.v1.tar".into(),
            modctl_tar("notes.txt", 0o644, &notes),
            "extra/notes.txt".into(),
        ));
        metas.push(modctl_metadata("notes.txt", 0o644, notes.len()));
        // Where modctl's own extract (and ours) puts it: the tar's name.
        expected.insert("notes.txt".into(), notes);
        let mut both: Vec<_> = layers.into_iter().zip(metas).collect();
        both.sort_by(|a, b| a.0.2.cmp(&b.0.2));
        (layers, metas) = both.into_iter().unzip();
    }
    let (meta_key, path_key) = (
        format!("org.{family}.model.file.metadata+json"),
        format!("org.{family}.model.filepath"),
    );
    let descs: Vec<String> = layers
        .iter()
        .zip(&metas)
        .map(|((mt, blob, path), meta)| {
            oci_descriptor(
                mt,
                blob,
                &[
                    (meta_key.as_str(), meta.clone()),
                    (path_key.as_str(), path.clone()),
                ],
            )
        })
        .collect();
    let blobs: Vec<&[u8]> = layers.iter().map(|(_, b, _)| &b[..]).collect();
    let diff_key = if legacy { "diff_ids" } else { "diffIds" };
    let config = format!(
        r#"{{"descriptor":{{"createdAt":"2026-03-14T09:30:00.123456789+08:00","family":"qwen2","name":"qwen-tiny","sourceURL":"https://github.com/example/qwen-tiny.git","revision":"3f2a9c1-dirty"}},"modelfs":{{"type":"layers","{diff_key}":[{}]}},"config":{{"architecture":"transformer","format":"safetensors","paramSize":"0.5B","precision":"bfloat16"}}}}"#,
        diff_ids(&blobs)
    )
    .into_bytes();
    let modelfile = "# Generated at 2026-03-14T09:29:58+08:00\nNAME qwen-tiny\nARCH transformer\nFAMILY qwen2\nFORMAT safetensors\nPARAMSIZE 0.5B\nPRECISION bfloat16\nCONFIG config.json\nCONFIG tokenizer/tokenizer.json\nMODEL model.safetensors\nCODE run.py\nDOC README.md\n";
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.{family}.model.manifest.v1+json","config":{},"layers":[{}],"annotations":{}}}"#,
        oci_descriptor(
            &format!("application/vnd.{family}.model.config.v1+json"),
            &config,
            &[]
        ),
        descs.join(","),
        go_map(&[(
            if legacy { "org.cnai.modctl.modelfile" } else { "org.cncf.modctl.modelfile" },
            modelfile.to_string()
        )])
    )
    .into_bytes();
    PeerArtifact {
        name: match flavour {
            ModctlFlavour::Raw => "modctl raw",
            ModctlFlavour::Tar => "modctl --raw=false",
            ModctlFlavour::LegacyCnai => "modctl v0.1 cnai",
            ModctlFlavour::AttachDestDir => "modctl attach --destination-dir",
        },
        manifest,
        config,
        blobs: layers.into_iter().map(|(_, b, _)| b).collect(),
        expected,
    }
}

/// A plain container image (busybox-shaped): not a model.
pub fn container_image() -> PeerArtifact {
    let layer = gzip(&go_tar(&[kit_entry("bin", None)]));
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Cmd":["sh"]}}"#.to_vec();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
        oci_descriptor("application/vnd.oci.image.config.v1+json", &config, &[]),
        oci_descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &layer, &[])
    )
    .into_bytes();
    PeerArtifact {
        name: "container image",
        manifest,
        config,
        blobs: vec![layer],
        expected: BTreeMap::new(),
    }
}
