//! Crafting hostile ModelPack artifacts: tar bytes with hand-made headers
//! (any name, type, link target and mode, including what the `tar` crate
//! refuses to write), manifests with arbitrary descriptors, pushed with raw
//! HTTP to a real docker-registry, plus helpers that tamper with the
//! registry's filesystem storage so it serves corrupt bytes. Also the
//! before/after snapshot of a directory tree used to prove nothing outside
//! the target changed.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::hostile_http::{ManifestServer, digest_of, push_blob, put_manifest, sha256_hex};

pub const MANIFEST_MT: &str = "application/vnd.oci.image.manifest.v1+json";
pub const ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
pub const CONFIG_MT: &str = "application/vnd.cncf.model.config.v1+json";
pub const RAW_MT: &str = "application/vnd.cncf.model.weight.v1.raw";
pub const TAR_MT: &str = "application/vnd.cncf.model.weight.v1.tar";
pub const FILEPATH: &str = "org.cncf.model.filepath";
pub const METADATA: &str = "org.cncf.model.file.metadata+json";

// ---------------------------------------------------------------- tar bytes

/// One tar entry, written with a hand-made ustar header. `pax_path` (when
/// set) is emitted as a PAX `path` record, so names with NUL bytes or of any
/// length are possible.
#[derive(Clone, Debug)]
pub struct TarEntry {
    pub name: Vec<u8>,
    pub typeflag: u8,
    pub link: Vec<u8>,
    pub mode: u32,
    pub data: Vec<u8>,
    pub pax_path: Option<Vec<u8>>,
}

impl TarEntry {
    pub fn file(name: &str, data: &[u8]) -> TarEntry {
        TarEntry {
            name: name.as_bytes().to_vec(),
            typeflag: b'0',
            link: vec![],
            mode: 0o644,
            data: data.to_vec(),
            pax_path: None,
        }
    }
    pub fn dir(name: &str) -> TarEntry {
        TarEntry {
            typeflag: b'5',
            mode: 0o755,
            ..TarEntry::file(name, b"")
        }
    }
    pub fn symlink(name: &str, target: &str) -> TarEntry {
        TarEntry {
            typeflag: b'2',
            link: target.as_bytes().to_vec(),
            mode: 0o777,
            ..TarEntry::file(name, b"")
        }
    }
    pub fn hardlink(name: &str, target: &str) -> TarEntry {
        TarEntry {
            typeflag: b'1',
            link: target.as_bytes().to_vec(),
            ..TarEntry::file(name, b"")
        }
    }
    pub fn special(name: &str, typeflag: u8) -> TarEntry {
        TarEntry {
            typeflag,
            ..TarEntry::file(name, b"")
        }
    }
    pub fn mode(mut self, mode: u32) -> TarEntry {
        self.mode = mode;
        self
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}\0", v, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

fn header(name: &[u8], typeflag: u8, link: &[u8], mode: u32, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = typeflag;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

/// Tar archive bytes (with the two zero end blocks).
pub fn tar(entries: &[TarEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if let Some(p) = &e.pax_path {
            let mut rec = b" path=".to_vec();
            rec.extend_from_slice(p);
            rec.push(b'\n');
            // The length prefix counts itself.
            let mut len = rec.len() + 1;
            while format!("{len}").len() + rec.len() != len {
                len = format!("{len}").len() + rec.len();
            }
            let mut data = format!("{len}").into_bytes();
            data.extend_from_slice(&rec);
            out.extend_from_slice(&header(b"PaxHeader", b'x', b"", 0o644, data.len() as u64));
            out.extend_from_slice(&data);
            pad(&mut out);
        }
        out.extend_from_slice(&header(
            &e.name,
            e.typeflag,
            &e.link,
            e.mode,
            e.data.len() as u64,
        ));
        out.extend_from_slice(&e.data);
        pad(&mut out);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

// ---------------------------------------------------------------- artifacts

/// One layer: its bytes, media type and annotations, and how the descriptor lies.
#[derive(Clone, Debug)]
pub struct Layer {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
    /// The size written into the descriptor (default: the real length).
    pub declared_size: Option<u64>,
    /// Bytes the registry's storage holds instead of `bytes` after the push.
    pub corrupt_with: Option<Vec<u8>>,
}

impl Layer {
    /// A raw file layer with a file path annotation (and a metadata annotation).
    pub fn raw(path: &str, bytes: &[u8]) -> Layer {
        let mut annotations = BTreeMap::new();
        annotations.insert(FILEPATH.to_string(), path.to_string());
        Layer {
            media_type: RAW_MT.into(),
            bytes: bytes.to_vec(),
            annotations,
            declared_size: None,
            corrupt_with: None,
        }
    }
    /// A raw layer whose metadata annotation carries `mode`.
    pub fn raw_with_mode(path: &str, bytes: &[u8], mode: u32) -> Layer {
        let mut l = Layer::raw(path, bytes);
        l.annotations.insert(
            METADATA.into(),
            json!({"name": path, "mode": mode, "uid": 0, "gid": 0, "size": bytes.len(),
                   "mtime": "2024-01-01T00:00:00Z", "typeflag": 0})
            .to_string(),
        );
        l
    }
    /// A tar layer; `path` is its directory annotation.
    pub fn tar(path: &str, entries: &[TarEntry]) -> Layer {
        let mut l = Layer::raw(path, &tar(entries));
        l.media_type = TAR_MT.into();
        l
    }
    pub fn digest(&self) -> String {
        digest_of(&self.bytes)
    }
    pub fn hex(&self) -> String {
        sha256_hex(&self.bytes)
    }
    /// The stored bytes get one byte flipped (same length), so the registry serves wrong bytes.
    pub fn corrupted(mut self) -> Layer {
        let mut c = self.bytes.clone();
        let i = c.len() / 2;
        c[i] ^= 0x55;
        self.corrupt_with = Some(c);
        self
    }
    pub fn declared(mut self, size: u64) -> Layer {
        self.declared_size = Some(size);
        self
    }
}

/// A whole artifact: layers, an optional config override and manifest extras.
#[derive(Clone, Debug, Default)]
pub struct Artifact {
    pub layers: Vec<Layer>,
    pub config: Option<Vec<u8>>,
    /// Extra top-level manifest annotations (e.g. padding for an oversize manifest).
    pub manifest_annotations: BTreeMap<String, String>,
    /// Write the manifest straight into registry storage instead of PUTting it
    /// (for manifests a real registry would refuse to accept but still serves).
    pub plant_manifest: bool,
    /// Serve the manifest from a hand-written server instead (see [`ManifestServer`]).
    pub serve_by_hand: bool,
}

/// A small valid ModelPack config for `layers`.
pub fn config_for(layers: &[Layer], pad: usize) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest()).collect();
    let mut v = json!({
        "descriptor": {"name": "hostile", "createdAt": "2024-01-01T00:00:00Z"},
        "config": {"format": "safetensors"},
        "modelfs": {"type": "layers", "diffIds": diff_ids},
    });
    if pad > 0 {
        v["descriptor"]["description"] = Value::String("x".repeat(pad));
    }
    serde_json::to_vec(&v).unwrap()
}

/// What a push produced.
pub struct Pushed {
    pub reference: String,
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub server: Option<ManifestServer>,
}

impl Artifact {
    pub fn new(layers: Vec<Layer>) -> Artifact {
        Artifact {
            layers,
            ..Default::default()
        }
    }

    pub fn manifest_bytes(&self) -> Vec<u8> {
        let config = self
            .config
            .clone()
            .unwrap_or_else(|| config_for(&self.layers, 0));
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| {
                json!({
                    "mediaType": l.media_type,
                    "digest": l.digest(),
                    "size": l.declared_size.unwrap_or(l.bytes.len() as u64),
                    "annotations": l.annotations,
                })
            })
            .collect();
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MT,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": CONFIG_MT, "digest": digest_of(&config), "size": config.len()},
            "layers": layers,
        });
        if !self.manifest_annotations.is_empty() {
            m["annotations"] = json!(self.manifest_annotations);
        }
        serde_json::to_vec(&m).unwrap()
    }

    /// Pushes blobs, then the manifest, to `registry_dir`'s registry on `port`
    /// as `repo:v1`; applies the storage corruptions afterwards.
    pub fn push(&self, port: u16, registry_dir: &Path, repo: &str) -> Pushed {
        let config = self
            .config
            .clone()
            .unwrap_or_else(|| config_for(&self.layers, 0));
        push_blob(port, repo, &config);
        for l in &self.layers {
            push_blob(port, repo, &l.bytes);
        }
        let manifest = self.manifest_bytes();
        let manifest_digest = digest_of(&manifest);
        if self.serve_by_hand {
            let server = ManifestServer::start(manifest.clone(), MANIFEST_MT);
            return Pushed {
                reference: format!("127.0.0.1:{}/{repo}:v1", server.port),
                manifest_digest,
                manifest,
                server: Some(server),
            };
        }
        if self.plant_manifest {
            plant_manifest(registry_dir, repo, "v1", &manifest);
        } else {
            let r = put_manifest(port, repo, "v1", MANIFEST_MT, &manifest);
            assert_eq!(
                r.status,
                201,
                "registry refused the manifest of {repo}: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
        for l in &self.layers {
            if let Some(bad) = &l.corrupt_with {
                overwrite_blob(registry_dir, &l.hex(), bad);
            }
        }
        Pushed {
            reference: format!("127.0.0.1:{port}/{repo}:v1"),
            manifest_digest,
            manifest,
            server: None,
        }
    }
}

fn storage(registry_dir: &Path) -> PathBuf {
    registry_dir.join("data/docker/registry/v2")
}

/// The data file of a blob in docker-registry's filesystem storage.
pub fn blob_data_path(registry_dir: &Path, hex: &str) -> PathBuf {
    storage(registry_dir).join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]))
}

/// Replaces a stored blob's bytes, so the real registry serves them under the old digest.
pub fn overwrite_blob(registry_dir: &Path, hex: &str, bytes: &[u8]) {
    let p = blob_data_path(registry_dir, hex);
    assert!(p.is_file(), "registry blob {} missing", p.display());
    std::fs::write(&p, bytes).unwrap();
}

/// Writes a manifest into the registry's storage as docker-registry itself
/// would (blob, revision link, tag links): the registry then serves it.
pub fn plant_manifest(registry_dir: &Path, repo: &str, tag: &str, manifest: &[u8]) {
    let hex = sha256_hex(manifest);
    let data = blob_data_path(registry_dir, &hex);
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    std::fs::write(&data, manifest).unwrap();
    let m = storage(registry_dir).join(format!("repositories/{repo}/_manifests"));
    let link = format!("sha256:{hex}");
    for p in [
        m.join(format!("revisions/sha256/{hex}/link")),
        m.join(format!("tags/{tag}/current/link")),
        m.join(format!("tags/{tag}/index/sha256/{hex}/link")),
    ] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &link).unwrap();
    }
}

// ---------------------------------------------------------------- snapshots

/// What one path looked like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub size: u64,
    pub mode: u32,
    pub link: Option<PathBuf>,
    pub sha256: Option<String>,
    pub nlink: u64,
}

/// Every path under `root` (not following symlinks) except those under an
/// `exclude` path: type, size, mode, symlink target, content hash, link count.
pub fn snapshot(root: &Path, exclude: &[PathBuf]) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    snap(root, root, exclude, &mut out);
    out
}

fn snap(root: &Path, dir: &Path, exclude: &[PathBuf], out: &mut BTreeMap<PathBuf, Node>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if exclude.iter().any(|x| p.starts_with(x)) {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let ft = m.file_type();
        let kind = if ft.is_symlink() {
            "symlink"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else {
            "special"
        };
        let node = Node {
            kind,
            size: if ft.is_dir() { 0 } else { m.len() },
            mode: m.mode(),
            link: std::fs::read_link(&p).ok(),
            sha256: if ft.is_file() {
                std::fs::read(&p).ok().map(|b| sha256_hex(&b))
            } else {
                None
            },
            nlink: if ft.is_dir() { 0 } else { m.nlink() },
        };
        out.insert(p.strip_prefix(root).unwrap().to_path_buf(), node);
        if ft.is_dir() {
            snap(root, &p, exclude, out);
        }
    }
}

/// Human list of differences between two snapshots (empty when equal).
pub fn diff(before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>) -> Vec<String> {
    let mut d = Vec::new();
    for (p, n) in before {
        match after.get(p) {
            None => d.push(format!("removed {}", p.display())),
            Some(m) if m != n => d.push(format!("changed {}: {n:?} -> {m:?}", p.display())),
            _ => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            d.push(format!("created {}", p.display()));
        }
    }
    d
}

/// Problems inside an output directory: temp/partial debris and symlinks
/// that resolve (or, dangling, point) outside it.
pub fn output_problems(out: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    if !out.exists() {
        return problems;
    }
    let real_out = std::fs::canonicalize(out).unwrap();
    for (rel, node) in snapshot(out, &[]) {
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if name == ".modelpack-partial" || name.starts_with(".tmp") || name.ends_with(".partial") {
            problems.push(format!("debris {}", rel.display()));
        }
        if node.kind == "symlink" {
            let p = out.join(&rel);
            let escapes = match std::fs::canonicalize(&p) {
                Ok(real) => !real.starts_with(&real_out),
                Err(_) => node.link.as_ref().is_some_and(|l| l.is_absolute()),
            };
            if escapes {
                problems.push(format!(
                    "symlink {} -> {} resolves outside the output",
                    rel.display(),
                    node.link.as_ref().unwrap().display()
                ));
            }
        }
        if node.kind == "special" {
            problems.push(format!("special file {}", rel.display()));
        }
    }
    problems
}
