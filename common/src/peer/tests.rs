use super::*;
use crate::digest::Digest;
use crate::manifest::Descriptor;

fn manifest(
    config_type: &str,
    artifact_type: Option<&str>,
    layers: &[(&str, Option<&str>)],
) -> Manifest {
    let layers: Vec<Descriptor> = layers
        .iter()
        .enumerate()
        .map(|(i, (mt, path))| {
            let mut d = Descriptor::new(*mt, Digest::of(i.to_string().as_bytes()), 1);
            if let Some(p) = path {
                d.annotations
                    .insert("org.cncf.model.filepath".into(), p.to_string());
            }
            d
        })
        .collect();
    let v = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": Descriptor::new(config_type, Digest::of(b"c"), 1),
        "layers": layers,
    });
    Manifest::parse(&serde_json::to_vec(&v).unwrap(), "m").unwrap()
}

#[test]
fn unannotated_dmr_layers_get_the_names_dmr_gives_them() {
    let m = manifest(
        dmr::CONFIG_V01,
        None,
        &[
            (dmr::GGUF, None),
            (dmr::GGUF, None),
            (dmr::GGUF, None),
            (dmr::LICENSE, None),
            (dmr::MMPROJ, None),
            (dmr::CHAT_TEMPLATE, None),
            (dmr::SAFETENSORS, Some("weights/a.safetensors")),
            (dmr::MODEL_FILE, None),
            (dmr::VLLM_CONFIG_TAR, None),
        ],
    );
    let names: Vec<_> = m.layers.iter().map(|l| l.filepath()).collect();
    assert_eq!(
        names,
        vec![
            Some("model-00001-of-00003.gguf"),
            Some("model-00002-of-00003.gguf"),
            Some("model-00003-of-00003.gguf"),
            Some("LICENSE"),
            Some("model.mmproj"),
            Some("template.jinja"),
            Some("weights/a.safetensors"),
            None,
            None,
        ]
    );
    assert_eq!(
        ArtifactKind::of(&m),
        Some(ArtifactKind::DockerModel(dmr::ConfigVersion::V01))
    );
    // The derived names never reach the bytes.
    let bytes = m.to_bytes();
    assert!(!String::from_utf8_lossy(&bytes).contains("model-00001"));
    let single = manifest(
        dmr::CONFIG_V01,
        None,
        &[
            (dmr::GGUF, None),
            (dmr::LICENSE, None),
            (dmr::LICENSE, None),
        ],
    );
    let names: Vec<_> = single
        .layers
        .iter()
        .map(|l| l.filepath().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "model.gguf",
            "LICENSE-00001-of-00002",
            "LICENSE-00002-of-00002"
        ]
    );
}

#[test]
fn peer_layer_types_decode_as_their_producer_means() {
    use crate::media::LayerFormat::*;
    for (mt, f) in [
        (dmr::VLLM_CONFIG_TAR, Some(Tar)),
        (dmr::DIR_TAR, Some(Tar)),
        (dmr::GGUF, Some(Raw)),
        (dmr::MODEL_FILE, Some(Raw)),
        ("application/vnd.kitops.modelkit.model.v1.tar", Some(Tar)),
        (
            "application/vnd.kitops.modelkit.docs.v1.tar+gzip",
            Some(TarGzip),
        ),
        (
            "application/vnd.kitops.modelkit.dataset.v1.tar+zstd",
            Some(TarZstd),
        ),
        ("application/vnd.kitops.modelkit.code.v1.raw", Some(Raw)),
        ("application/vnd.kitops.modelkit.model.v1.raw+gzip", None),
        ("application/vnd.kitops.modelkit.secrets.v1.tar", None),
        ("application/vnd.oci.image.layer.v1.tar", None),
    ] {
        assert_eq!(layer_format(mt), f, "{mt}");
    }
}

#[test]
fn kinds_and_non_models() {
    let kit = manifest(
        kitops::CONFIG,
        None,
        &[("application/vnd.kitops.modelkit.model.v1.tar", None)],
    );
    assert_eq!(ArtifactKind::of(&kit), Some(ArtifactKind::KitOps));
    let mp = manifest(
        "application/vnd.cnai.model.config.v1+json",
        Some("application/vnd.cnai.model.manifest.v1+json"),
        &[],
    );
    assert_eq!(
        ArtifactKind::of(&mp),
        Some(ArtifactKind::ModelPack(crate::media::Family::Cnai))
    );
    let image = manifest(
        "application/vnd.oci.image.config.v1+json",
        None,
        &[("application/vnd.oci.image.layer.v1.tar+gzip", None)],
    );
    assert_eq!(ArtifactKind::of(&image), None);
    assert!(!image.is_model());
    let msg = not_a_model("r/busybox:1", &image);
    assert!(
        msg.contains("not a ModelPack artifact") && msg.contains("container image"),
        "{msg}"
    );
}

#[test]
fn summaries_of_each_producer() {
    let d = manifest(dmr::CONFIG_V01, None, &[(dmr::GGUF, None)]);
    let cfg = br#"{"config":{"format":"gguf","quantization":"Q4_K_M","parameters":"8.03B","architecture":"llama","size":"4.58GiB","gguf":{"a":"b"},"context_size":8192},"descriptor":{"created":"2025-05-01T10:00:00.123Z"},"rootfs":{"type":"rootfs","diff_ids":["sha256:00"]}}"#;
    let s = summarize(&d, cfg);
    assert_eq!(s.kind, "Docker Model Runner (config v0.1)");
    assert_eq!(
        (
            s.format.as_deref(),
            s.param_size.as_deref(),
            s.architecture.as_deref(),
            s.quantization.as_deref(),
            s.created.as_deref()
        ),
        (
            Some("gguf"),
            Some("8.03B"),
            Some("llama"),
            Some("Q4_K_M"),
            Some("2025-05-01T10:00:00.123Z")
        )
    );
    let k = manifest(kitops::CONFIG, None, &[]);
    let kf = br#"{"manifestVersion":"1.0.0","package":{"name":"tiny","version":"1.2.0","license":"MIT"},"model":{"name":"tiny-llm","path":"models/tiny.gguf","framework":"llama.cpp","format":"gguf","digest":"sha256:aa","diffId":"sha256:aa"}}"#;
    let s = summarize(&k, kf);
    assert_eq!(s.kind, "KitOps ModelKit");
    assert_eq!(
        (
            s.name.as_deref(),
            s.version.as_deref(),
            s.format.as_deref(),
            s.family.as_deref(),
            s.license.as_deref()
        ),
        (
            Some("tiny"),
            Some("1.2.0"),
            Some("gguf"),
            Some("llama.cpp"),
            Some("MIT")
        )
    );
}

#[test]
fn unannotated_dmr_safetensors_are_named_like_dmr_names_them() {
    let one = manifest(dmr::CONFIG_V01, None, &[(dmr::SAFETENSORS, None)]);
    assert_eq!(one.layers[0].filepath(), Some("model.safetensors"));
    let two = manifest(
        dmr::CONFIG_V01,
        None,
        &[(dmr::SAFETENSORS, None), (dmr::SAFETENSORS, None)],
    );
    let names: Vec<_> = two.layers.iter().map(|l| l.filepath()).collect();
    assert_eq!(
        names,
        vec![
            Some("model-00001-of-00002.safetensors"),
            Some("model-00002-of-00002.safetensors")
        ]
    );
}
