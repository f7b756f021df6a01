//! Table-driven checks modelled on model-spec's schema/config_test.go, plus one test per lint.

use super::*;

const D: &str = "sha256:1234567890abcdef1234567890abcdef1234567890abcdef1234567890abcdef";

fn cfg(descriptor: &str, config: &str, modelfs: &str) -> String {
    format!(r#"{{"descriptor":{descriptor},"config":{config},"modelfs":{modelfs}}}"#)
}

fn fs_ok() -> String {
    format!(r#"{{"type":"layers","diffIds":["{D}"]}}"#)
}

fn schema_only(doc: &str) -> Report {
    let v: serde_json::Value = serde_json::from_str(doc).unwrap();
    let mut r = Report::default();
    schema_problems(&v, false, &mut r);
    r
}

#[test]
fn spec_invalid_cases() {
    let f = fs_ok();
    let cases: Vec<(&str, String)> = vec![
        (
            "createdAt not a date-time",
            cfg(r#"{"createdAt":"2025/01/01"}"#, "{}", &f),
        ),
        (
            "createdAt wrong type",
            cfg(r#"{"createdAt":20250101}"#, "{}", &f),
        ),
        ("authors not an array", cfg(r#"{"authors":"me"}"#, "{}", &f)),
        (
            "authors items not strings",
            cfg(r#"{"authors":[1]}"#, "{}", &f),
        ),
        ("empty name", cfg(r#"{"name":""}"#, "{}", &f)),
        ("vendor number", cfg(r#"{"vendor":1}"#, "{}", &f)),
        (
            "licenses not an array",
            cfg(r#"{"licenses":"MIT"}"#, "{}", &f),
        ),
        ("docURL number", cfg(r#"{"docURL":1}"#, "{}", &f)),
        (
            "datasetsURL string",
            cfg(r#"{"datasetsURL":"x"}"#, "{}", &f),
        ),
        (
            "unknown descriptor key",
            cfg(r#"{"nickname":"x"}"#, "{}", &f),
        ),
        (
            "architecture number",
            cfg("{}", r#"{"architecture":1}"#, &f),
        ),
        ("format array", cfg("{}", r#"{"format":["gguf"]}"#, &f)),
        ("paramSize number", cfg("{}", r#"{"paramSize":8}"#, &f)),
        ("precision number", cfg("{}", r#"{"precision":16}"#, &f)),
        (
            "quantization bool",
            cfg("{}", r#"{"quantization":true}"#, &f),
        ),
        (
            "bad input modality",
            cfg("{}", r#"{"capabilities":{"inputTypes":["smell"]}}"#, &f),
        ),
        (
            "bad output modality",
            cfg("{}", r#"{"capabilities":{"outputTypes":["hologram"]}}"#, &f),
        ),
        (
            "inputTypes not an array",
            cfg("{}", r#"{"capabilities":{"inputTypes":"text"}}"#, &f),
        ),
        (
            "knowledgeCutoff bad date",
            cfg(
                "{}",
                r#"{"capabilities":{"knowledgeCutoff":"yesterday"}}"#,
                &f,
            ),
        ),
        (
            "reasoning string",
            cfg("{}", r#"{"capabilities":{"reasoning":"yes"}}"#, &f),
        ),
        (
            "toolUsage number",
            cfg("{}", r#"{"capabilities":{"toolUsage":1}}"#, &f),
        ),
        (
            "reward string",
            cfg("{}", r#"{"capabilities":{"reward":"no"}}"#, &f),
        ),
        (
            "language three letters",
            cfg("{}", r#"{"capabilities":{"languages":["eng"]}}"#, &f),
        ),
        (
            "language uppercase",
            cfg("{}", r#"{"capabilities":{"languages":["EN"]}}"#, &f),
        ),
        (
            "unknown capability key",
            cfg("{}", r#"{"capabilities":{"embedding":true}}"#, &f),
        ),
        (
            "empty diffIds",
            cfg("{}", "{}", r#"{"type":"layers","diffIds":[]}"#),
        ),
        (
            "type not layers",
            cfg(
                "{}",
                "{}",
                &format!(r#"{{"type":"layer","diffIds":["{D}"]}}"#),
            ),
        ),
        ("missing diffIds", cfg("{}", "{}", r#"{"type":"layers"}"#)),
        (
            "snake_case diff_ids",
            cfg(
                "{}",
                "{}",
                &format!(r#"{{"type":"layers","diff_ids":["{D}"]}}"#),
            ),
        ),
        (
            "missing modelfs",
            r#"{"descriptor":{},"config":{}}"#.to_string(),
        ),
        (
            "missing config",
            format!(r#"{{"descriptor":{{}},"modelfs":{f}}}"#),
        ),
        (
            "unknown top-level key",
            format!(r#"{{"descriptor":{{}},"config":{{}},"modelfs":{f},"extra":1}}"#),
        ),
    ];
    assert!(cases.len() >= 24);
    for (what, doc) in cases {
        let r = schema_only(&doc);
        assert!(!r.is_valid(), "{what} should be invalid: {doc}");
        assert!(!validate_config(doc.as_bytes()).is_valid(), "{what}");
    }
}

#[test]
fn spec_valid_cases() {
    let minimal = r#"{"descriptor":{},"config":{},"modelfs":{"type":"layers","diffIds":["x"]}}"#;
    assert!(
        schema_only(minimal).is_valid(),
        "{:?}",
        schema_only(minimal).problems
    );
    let full = include_str!("../../spec/modelpack-example-config.json");
    let r = validate_config(full.as_bytes());
    assert!(r.is_valid(), "{:?}", r.problems);
    let caps = cfg(
        r#"{"name":"m","licenses":["Apache-2.0 OR MIT"]}"#,
        r#"{"paramSize":"0.5B","precision":"bfloat16, float32","capabilities":{"inputTypes":["text","image"],"outputTypes":["text"],"reasoning":true,"toolUsage":true,"reward":false,"languages":["en","fr"],"knowledgeCutoff":"2024-05-21T00:00:00Z"}}"#,
        &fs_ok(),
    );
    let r = validate_config(caps.as_bytes());
    assert!(r.is_valid(), "{:?}", r.problems);
}

fn has(r: &Report, path: &str, lint: Option<&str>) -> bool {
    has_at(r, path, lint, Severity::Error)
}

fn warns(r: &Report, path: &str, lint: Option<&str>) -> bool {
    has_at(r, path, lint, Severity::Warning)
}

fn has_at(r: &Report, path: &str, lint: Option<&str>, severity: Severity) -> bool {
    r.problems
        .iter()
        .any(|p| p.path == path && p.lint == lint && p.severity == severity)
}

#[test]
fn config_lints() {
    // Docker Model Runner's `--format cncf` output: valid, with a warning that says what to write.
    let r = validate_config(cfg("{}", r#"{"paramSize":"8.03B"}"#, &fs_ok()).as_bytes());
    assert!(r.is_valid(), "{:?}", r.problems);
    assert!(
        warns(&r, "config:/config/paramSize", Some("L1")),
        "{:?}",
        r.problems
    );
    assert!(
        r.problems[0].message.contains(r#"write "8B""#),
        "{:?}",
        r.problems
    );
    let r = validate_config(cfg("{}", r#"{"precision":"bfloat16,fp8"}"#, &fs_ok()).as_bytes());
    assert!(r.is_valid() && warns(&r, "config:/config/precision", Some("L2")));
    let r = validate_config(cfg(r#"{"licenses":["MIT OR"]}"#, "{}", &fs_ok()).as_bytes());
    assert!(r.is_valid() && warns(&r, "config:/descriptor/licenses/0", Some("L3")));
    let r = validate_config(
        cfg("{}", "{}", r#"{"type":"layers","diffIds":["sha256:abc"]}"#).as_bytes(),
    );
    assert!(has(&r, "config:/modelfs/diffIds/0", Some("L4")));
    let r =
        validate_config(cfg(r#"{"createdAt":"2025-13-45T00:00:00Z"}"#, "{}", &fs_ok()).as_bytes());
    assert!(
        has(&r, "config:/descriptor/createdAt", Some("L12")),
        "{:?}",
        r.problems
    );
    let r = validate_config(b"{not json");
    assert!(!r.is_valid() && r.problems[0].message.contains("line 1"));
}

fn layer(path: &str, digest: &str, size: u64) -> String {
    let meta = serde_json::to_string(&format!(r#"{{"name":"x","mode":420,"uid":0,"gid":0,"size":{size},"mtime":"1970-01-01T00:00:00Z","typeflag":0}}"#)).unwrap();
    format!(
        r#"{{"mediaType":"application/vnd.cncf.model.weight.v1.raw","digest":"{digest}","size":{size},"annotations":{{"org.cncf.model.filepath":"{path}","org.opencontainers.image.title":"{path}","org.cncf.model.file.metadata+json":{meta}}}}}"#
    )
}

fn manifest(config: &[u8], layers: &[String]) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.cncf.model.manifest.v1+json","config":{{"mediaType":"application/vnd.cncf.model.config.v1+json","digest":"{}","size":{}}},"layers":[{}]}}"#,
        Digest::of(config),
        config.len(),
        layers.join(",")
    )
}

#[test]
fn builder_shaped_artifact_is_valid() {
    let config = cfg("{}", "{}", &fs_ok());
    let m = manifest(config.as_bytes(), &[layer("model.safetensors", D, 3)]);
    let r = validate_artifact(m.as_bytes(), config.as_bytes(), &|_| Some(3));
    assert!(r.is_valid(), "{:?}", r.problems);
    assert_eq!(r.warnings().count(), 0, "{:?}", r.problems);
}

#[test]
fn manifest_and_pair_lints() {
    let config = cfg("{}", "{}", &fs_ok());
    let c = config.as_bytes();
    let m = manifest(c, &[layer("../etc/passwd", D, 3)]);
    assert!(has(
        &validate_manifest(m.as_bytes()),
        "manifest:/layers/0/annotations/org.cncf.model.filepath",
        Some("L9")
    ));
    let m = manifest(c, &[layer("a", D, 3), layer("a", D, 3)]);
    assert!(has(
        &validate_manifest(m.as_bytes()),
        "manifest:/layers/1/annotations/org.cncf.model.filepath",
        Some("L9")
    ));
    // modctl writes no titles: one summary warning for the artifact, not one per layer.
    let untitled = |p: &str| {
        layer(p, D, 3).replace(&format!("\"org.opencontainers.image.title\":\"{p}\","), "")
    };
    let m = manifest(c, &[untitled("a"), untitled("b"), layer("c", D, 3)]);
    let r = validate_manifest(m.as_bytes());
    let l10: Vec<_> = r.warnings().filter(|p| p.lint == Some("L10")).collect();
    assert_eq!(l10.len(), 1, "{:?}", r.problems);
    assert!(l10[0].message.contains("2 of 3 layers"), "{:?}", l10);
    assert_eq!(l10[0].path, "manifest:/layers/0/annotations");
    let m = manifest(c, &[layer("a", D, 3)])
        .replace(r#""size":3,"annotations""#, r#""size":4,"annotations""#);
    assert!(warns(
        &validate_manifest(m.as_bytes()),
        "manifest:/layers/0/annotations/org.cncf.model.file.metadata+json",
        Some("L13")
    ));
    let m = manifest(c, &[layer("a", D, 3)]).replace(r#"\"mode\":420"#, r#"\"mode\":\"rw\""#);
    assert!(has(
        &validate_manifest(m.as_bytes()),
        "manifest:/layers/0/annotations/org.cncf.model.file.metadata+json",
        Some("L13")
    ));
    let m = manifest(c, &[layer("a", D, 3)]).replace(
        "application/vnd.cncf.model.manifest.v1+json",
        "application/vnd.unknown.artifact.v1",
    );
    assert!(has(
        &validate_manifest(m.as_bytes()),
        "manifest:/artifactType",
        Some("L7")
    ));
    let m = manifest(c, &[layer("a", D, 3), layer("b", D, 3)]);
    assert!(has(
        &validate_artifact(m.as_bytes(), c, &|_| None),
        "config:/modelfs/diffIds",
        Some("L5")
    ));
    let other = "sha256:abcdef1234567890abcdef1234567890abcdef1234567890abcdef1234567890";
    let m = manifest(c, &[layer("a", other, 3)]);
    assert!(has(
        &validate_artifact(m.as_bytes(), c, &|_| None),
        "config:/modelfs/diffIds/0",
        Some("L6")
    ));
    let m = manifest(c, &[layer("a", D, 3)]);
    assert!(has(
        &validate_artifact(m.as_bytes(), c, &|_| Some(5)),
        "manifest:/layers/0/size",
        Some("L11")
    ));
    assert!(has(
        &validate_artifact(m.as_bytes(), b"{}", &|_| None),
        "manifest:/config/digest",
        Some("L11")
    ));
}

#[test]
fn tar_layer_whose_annotation_disagrees_with_its_entries_is_flagged() {
    // modctl `attach --destination-dir extra --raw=false notes.txt`: the
    // annotation gets the directory, the tar entry does not.
    let d = crate::digest::Digest::of(b"tar");
    let mut l =
        crate::manifest::Descriptor::new("application/vnd.cncf.model.doc.v1.tar", d.clone(), 3);
    l.annotations
        .insert("org.cncf.model.filepath".into(), "extra/notes.txt".into());
    let m = crate::manifest::Manifest::model(
        crate::media::Family::Cncf,
        crate::manifest::Descriptor::new("application/vnd.cncf.model.config.v1+json", d.clone(), 1),
        vec![l],
    );
    let mut r = Report::default();
    lint_tar_paths(&m, &|_| Some(vec!["notes.txt".into()]), &mut r);
    assert!(
        warns(&r, "manifest:/layers/0/annotations", Some("L14")),
        "{:?}",
        r.problems
    );
    assert!(r.problems[0].message.contains(r#""notes.txt""#));
    // A directory layer, and KitOps' ancestor directories, agree.
    for files in [
        vec!["extra/notes.txt".to_string()],
        vec!["extra/notes.txt/a".into(), "extra/notes.txt/b/c".into()],
    ] {
        let mut r = Report::default();
        lint_tar_paths(&m, &|_| Some(files.clone()), &mut r);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }
}

#[test]
fn param_size_warning_points_at_the_key_the_config_uses() {
    let doc = cfg("{}", r#"{"param_size":"8.03B"}"#, &fs_ok());
    let mut r = Report::default();
    lint_config(&serde_json::from_str(&doc).unwrap(), &mut r);
    assert!(
        warns(&r, "config:/config/param_size", Some("L1")),
        "{:?}",
        r.problems
    );
}

#[test]
fn camel_case_config_missing_diff_ids_is_pointed_at_diff_ids() {
    let c = cfg("{}", "{}", r#"{"type":"layers"}"#);
    let m = manifest(c.as_bytes(), &[layer("a", D, 3)]);
    let r = validate_artifact(m.as_bytes(), c.as_bytes(), &|_| None);
    assert!(
        has(&r, "config:/modelfs/diffIds", Some("L5")),
        "{:?}",
        r.problems
    );
    assert!(
        !r.problems.iter().any(|p| p.path.contains("diff_ids")),
        "{:?}",
        r.problems
    );
}

/// Blobs held in memory, for the lints that read them.
struct MemBlobs(Vec<(Digest, Vec<u8>)>);

impl BlobAccess for MemBlobs {
    fn size(&self, d: &Digest) -> Option<u64> {
        self.0
            .iter()
            .find(|(k, _)| k == d)
            .map(|(_, b)| b.len() as u64)
    }
    fn uncompressed_digest(
        &self,
        d: &Digest,
        format: crate::media::LayerFormat,
    ) -> Option<Decompressed> {
        let (_, b) = self.0.iter().find(|(k, _)| k == d)?;
        Some(super::blobs::decompressed_digest(&b[..], format, 1 << 20))
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A manifest of gzip tar layers and a config whose diffIds are `ids`.
fn gzip_artifact(blobs: &[Vec<u8>], ids: &[String]) -> (String, String) {
    let c = cfg(
        "{}",
        "{}",
        &format!(
            r#"{{"type":"layers","diffIds":[{}]}}"#,
            ids.iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    );
    let layers: Vec<String> = blobs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                r#"{{"mediaType":"application/vnd.cncf.model.weight.v1.tar+gzip","digest":"{}","size":{},"annotations":{{"org.cncf.model.filepath":"w{i}"}}}}"#,
                Digest::of(b),
                b.len()
            )
        })
        .collect();
    (manifest(c.as_bytes(), &layers), c)
}

#[test]
fn compressed_diff_ids_are_checked_where_the_blobs_are_here() {
    let plain = [b"first tar".to_vec(), b"second tar".to_vec()];
    let blobs: Vec<Vec<u8>> = plain.iter().map(|p| gzip(p)).collect();
    let right: Vec<String> = plain.iter().map(|p| Digest::of(p).to_string()).collect();
    let mem = MemBlobs(blobs.iter().map(|b| (Digest::of(b), b.clone())).collect());

    // Right diffIds and blobs at hand: nothing to say.
    let (m, c) = gzip_artifact(&blobs, &right);
    let r = validate_with(m.as_bytes(), c.as_bytes(), &mem);
    assert!(r.problems.is_empty(), "{:?}", r.problems);

    // A wrong one is an error at its index.
    let wrong = vec![right[0].clone(), D.to_string()];
    let (m, c) = gzip_artifact(&blobs, &wrong);
    let r = validate_with(m.as_bytes(), c.as_bytes(), &mem);
    assert!(
        has(&r, "config:/modelfs/diffIds/1", Some("L6")),
        "{:?}",
        r.problems
    );
    assert_eq!(r.errors().count(), 1, "{:?}", r.problems);

    // Without the blobs: one summary warning naming both layers, no error.
    let r = validate_artifact(m.as_bytes(), c.as_bytes(), &|_| None);
    let l6: Vec<_> = r.problems.iter().filter(|p| p.lint == Some("L6")).collect();
    assert_eq!(l6.len(), 1, "{:?}", r.problems);
    assert!(
        l6[0].severity == Severity::Warning && l6[0].message.contains("layers 0, 1"),
        "{:?}",
        l6
    );

    // A blob that is not gzip at all is an error naming the layer.
    let bogus = vec![b"not gzip".to_vec()];
    let mem = MemBlobs(vec![(Digest::of(&bogus[0]), bogus[0].clone())]);
    let (m, c) = gzip_artifact(&bogus, &[D.to_string()]);
    let r = validate_with(m.as_bytes(), c.as_bytes(), &mem);
    assert!(
        has(&r, "manifest:/layers/0", Some("L6")),
        "{:?}",
        r.problems
    );

    // A bomb stops at the bound with a warning, not hours of hashing.
    let zeros = gzip(&vec![0u8; 3 << 20]);
    assert!(matches!(
        super::blobs::decompressed_digest(&zeros[..], crate::media::LayerFormat::TarGzip, 1 << 20),
        Decompressed::TooLarge(_)
    ));
}

#[test]
fn a_snake_case_config_is_judged_by_the_schema_of_its_family() {
    let c = cfg(
        "{}",
        "{}",
        &format!(r#"{{"type":"layers","diff_ids":["{D}"]}}"#),
    );
    let cncf = manifest(c.as_bytes(), &[layer("a", D, 3)]);
    // modctl ≤ v0.1.2: cnai identifiers, v0.0.6 config — valid, with a warning.
    let cnai = cncf
        .replace("application/vnd.cncf.model.", "application/vnd.cnai.model.")
        .replace("org.cncf.model.", "org.cnai.model.");
    let r = validate_artifact(cnai.as_bytes(), c.as_bytes(), &|_| None);
    assert!(r.is_valid(), "{:?}", r.problems);
    assert!(
        warns(&r, "config:/modelfs/diff_ids", None),
        "{:?}",
        r.problems
    );
    // The same config under cncf identifiers: the current schema decides.
    let r = validate_artifact(cncf.as_bytes(), c.as_bytes(), &|_| None);
    assert!(!r.is_valid(), "{:?}", r.problems);
}
