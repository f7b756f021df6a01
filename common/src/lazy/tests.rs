use std::collections::BTreeMap;

use super::*;
use crate::chunkindex::trust::assess;
use crate::chunkindex::{IndexFormat, Indexer, LayerRef};
use crate::config::ModelConfig;
use crate::manifest::{Descriptor, Manifest};
use crate::media;
use crate::reference::Reference;

const RAW: &str = "application/vnd.cncf.model.weight.v1.raw";
const TAR: &str = "application/vnd.cncf.model.weight.v1.tar";
const TAR_GZ: &str = "application/vnd.cncf.model.weight.v1.tar+gzip";

fn layer(media_type: &str, data: &[u8], path: &str) -> Descriptor {
    let mut d = Descriptor::new(media_type, Digest::of(data), data.len() as u64);
    d.annotations = BTreeMap::from([("org.cncf.model.filepath".to_string(), path.to_string())]);
    d
}

fn index_of(data: &[u8], d: &Descriptor) -> LayerIndex {
    let format = IndexFormat::for_media_type(&d.media_type).unwrap();
    let mut ix = Indexer::new(64 << 10, format);
    ix.update(data);
    ix.finish(LayerRef::of(d)).unwrap()
}

fn tar_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn view_of(layers: &[Descriptor], diff_ids: Vec<Digest>) -> ModelView {
    let cfg = Descriptor::new(media::OCI_EMPTY, Digest::of(b"{}"), 2);
    let m: Manifest = serde_json::from_value(serde_json::json!({
        "schemaVersion": 2, "config": cfg, "layers": layers,
    }))
    .unwrap();
    let mut c: ModelConfig = serde_json::from_value(serde_json::json!({
        "descriptor": {}, "config": {}, "modelfs": {"type": "layers", "diffIds": []}
    }))
    .unwrap();
    c.modelfs.diff_ids = diff_ids;
    let r: Reference = "127.0.0.1:5000/m/x:v1".parse().unwrap();
    ModelView::new(r, Digest::of(b"manifest"), &m, &c).unwrap()
}

#[test]
fn only_indexes_the_policy_trusts_are_served_lazily_and_stored_blobs_are_complete() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::open(dir.path()).unwrap();
    let stored: Vec<u8> = vec![1u8; 1000];
    let bound_data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let unbound_data: Vec<u8> = vec![9u8; 150_000];
    let plain_data: Vec<u8> = vec![3u8; 10];
    let a = layer(RAW, &stored, "config.json");
    let mut b = layer(RAW, &bound_data, "w/bound.safetensors");
    let bi = index_of(&bound_data, &b);
    let bi_digest = Digest::of(&bi.to_bytes());
    b.annotations.insert(
        media::ANNOTATION_CHUNKS_DIGEST.into(),
        bi_digest.to_string(),
    );
    let c = layer(RAW, &unbound_data, "w/unbound.safetensors");
    let ci = index_of(&unbound_data, &c);
    let ci_digest = Digest::of(&ci.to_bytes());
    let d = layer(RAW, &plain_data, "README.md");
    let layers = vec![a.clone(), b.clone(), c.clone(), d.clone()];
    let view = view_of(&layers, layers.iter().map(|l| l.digest.clone()).collect());
    let mut ingest = cas.ingest(None).unwrap();
    std::io::Write::write_all(&mut ingest, &stored).unwrap();
    ingest.commit(Some(&a.digest), Some(1000)).unwrap();

    let indexes = vec![(bi_digest.clone(), bi), (ci_digest.clone(), ci)];
    let m: Manifest = serde_json::from_value(serde_json::json!({
        "schemaVersion": 2,
        "config": Descriptor::new(media::OCI_EMPTY, Digest::of(b"{}"), 2),
        "layers": layers,
    }))
    .unwrap();
    let trust = assess(&m, &indexes, &[]);
    let kinds = |p: &[LayerPlan]| -> Vec<String> {
        p.iter()
            .map(|l| match &l.source {
                LayerSource::Complete => "complete".to_string(),
                LayerSource::Lazy { binding, .. } => format!("lazy:{}", binding.as_str()),
                LayerSource::Fetch => "fetch".to_string(),
            })
            .collect()
    };
    let strict = plan(&view, &trust, &indexes, &cas, LazyPolicy::default());
    assert_eq!(
        kinds(&strict),
        ["complete", "lazy:bound", "fetch", "fetch"],
        "an unbound index is not served unless the user opted in"
    );
    let open = plan(
        &view,
        &trust,
        &indexes,
        &cas,
        LazyPolicy {
            allow_unbound: true,
        },
    );
    assert_eq!(
        kinds(&open),
        ["complete", "lazy:bound", "lazy:unbound", "fetch"]
    );
    // A pin makes the unbound index trusted without the opt-in.
    let pinned = assess(&m, &indexes, std::slice::from_ref(&ci_digest));
    assert_eq!(
        kinds(&plan(&view, &pinned, &indexes, &cas, LazyPolicy::default()))[2],
        "lazy:pinned"
    );
    let files = layer_files(&strict[1], &cas).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path.to_str(), Some("w/bound.safetensors"));
    assert_eq!(files[0].size, bound_data.len() as u64);
    assert!(
        layer_files(&strict[2], &cas).is_ok(),
        "a raw layer's file is known"
    );
}

#[test]
fn tar_layers_show_their_files_from_the_index_or_the_stored_headers() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::open(dir.path()).unwrap();
    let data = tar_of(&[
        ("tokenizer.json", b"{\"t\":1}", 0o644),
        ("bin/run.sh", b"#!/bin/sh\n", 0o755),
    ]);
    let l = layer(TAR, &data, "files");
    let view = view_of(std::slice::from_ref(&l), vec![l.digest.clone()]);
    let idx = index_of(&data, &l);
    let lazy = LayerPlan {
        layer: view.layers[0].clone(),
        source: LayerSource::Lazy {
            index: Box::new(idx),
            binding: Binding::Bound,
        },
    };
    let from_index = layer_files(&lazy, &cas).unwrap();
    let mut ingest = cas.ingest(None).unwrap();
    std::io::Write::write_all(&mut ingest, &data).unwrap();
    ingest
        .commit(Some(&l.digest), Some(data.len() as u64))
        .unwrap();
    let complete = plan(&view, &[], &[], &cas, LazyPolicy::default());
    assert!(matches!(complete[0].source, LayerSource::Complete));
    let from_headers = layer_files(&complete[0], &cas).unwrap();
    assert_eq!(from_index, from_headers);
    let shown: Vec<_> = from_headers
        .iter()
        .map(|f| (f.path.to_str().unwrap().to_string(), f.mode))
        .collect();
    assert_eq!(
        shown,
        [
            ("tokenizer.json".to_string(), 0o444),
            ("bin/run.sh".to_string(), 0o555)
        ]
    );
    let f = &from_headers[0];
    assert_eq!(
        &data[f.offset as usize..(f.offset + f.size) as usize],
        b"{\"t\":1}"
    );
}

#[test]
fn hostile_index_entries_and_compressed_layers_are_refused_with_the_layer_named() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::open(dir.path()).unwrap();
    let data = tar_of(&[("ok.txt", b"fine", 0o644)]);
    let l = layer(TAR, &data, "files");
    let view = view_of(std::slice::from_ref(&l), vec![l.digest.clone()]);
    let mut idx = index_of(&data, &l);
    idx.files[0].path = "../../etc/passwd".into();
    let evil = LayerPlan {
        layer: view.layers[0].clone(),
        source: LayerSource::Lazy {
            index: Box::new(idx.clone()),
            binding: Binding::Bound,
        },
    };
    assert!(layer_files(&evil, &cas).is_err());
    idx.files[0].path = "ok.txt".into();
    idx.files[0].offset = u64::MAX - 1;
    let outside = LayerPlan {
        source: LayerSource::Lazy {
            index: Box::new(idx),
            binding: Binding::Bound,
        },
        ..evil
    };
    let err = layer_files(&outside, &cas).unwrap_err().to_string();
    assert!(err.contains("outside the layer"), "{err}");

    let gz = layer(TAR_GZ, b"not really gzip", "files");
    let view = view_of(std::slice::from_ref(&gz), vec![Digest::of(b"diff")]);
    let p = LayerPlan {
        layer: view.layers[0].clone(),
        source: LayerSource::Complete,
    };
    let err = layer_files(&p, &cas).unwrap_err().to_string();
    assert!(
        err.contains("compressed tar") && err.contains("files"),
        "{err}"
    );
}
