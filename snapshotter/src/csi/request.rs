//! What a `NodePublishVolume` asks for, checked: everything in it comes from
//! kubelet on behalf of a pod spec anyone in a namespace may write, so each
//! field is validated (reference syntax, digest pinning for persistent
//! volumes, a safe sub-path, compilable globs, a boolean that is one) before
//! anything is fetched or mounted.

use std::path::{Path, PathBuf};

use modelpack_common::credentials::Credential;
use modelpack_common::reference::Reference;

use crate::csi_proto::NodePublishVolumeRequest;
use crate::csi_proto::volume_capability::AccessType;

/// `volumeAttributes` keys.
pub const ATTR_REFERENCE: &str = "reference";
pub const ATTR_PATH: &str = "path";
pub const ATTR_INCLUDE: &str = "include";
pub const ATTR_PREFETCH: &str = "prefetch";
/// kubelet sets this on ephemeral inline volumes.
pub const ATTR_EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";

/// Most globs in `include`, and most bytes of the attribute.
const MAX_INCLUDE: usize = 64;
const MAX_ATTR: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub volume_id: String,
    pub target: PathBuf,
    pub reference: Reference,
    pub path: Option<String>,
    pub include: Vec<String>,
    /// `None`: the node's default.
    pub prefetch: Option<bool>,
}

/// A request error: becomes `InvalidArgument` with this text.
pub type Invalid = String;

pub fn volume_id(id: &str) -> Result<(), Invalid> {
    if id.is_empty() {
        return Err("volume_id is required".into());
    }
    if id.len() > MAX_ATTR || id.chars().any(char::is_control) {
        return Err("volume_id is too long or has control characters".into());
    }
    Ok(())
}

pub fn target_path(p: &str) -> Result<PathBuf, Invalid> {
    if p.is_empty() {
        return Err("target_path is required".into());
    }
    let path = Path::new(p);
    if !path.is_absolute()
        || path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!("target_path {p:?} must be absolute, without '..'"));
    }
    Ok(path.to_path_buf())
}

pub fn parse(req: &NodePublishVolumeRequest) -> Result<Publish, Invalid> {
    volume_id(&req.volume_id)?;
    let target = target_path(&req.target_path)?;
    let cap = req
        .volume_capability
        .as_ref()
        .ok_or("volume_capability is required")?;
    match &cap.access_type {
        Some(AccessType::Mount(_)) => {}
        Some(AccessType::Block(_)) => {
            return Err(
                "block volumes are not supported: models are served as a read-only filesystem"
                    .into(),
            );
        }
        None => return Err("volume_capability.access_type is required (mount)".into()),
    }
    let ctx = &req.volume_context;
    if ctx.values().any(|v| v.len() > MAX_ATTR) {
        return Err(format!(
            "a volumeAttributes value is longer than {MAX_ATTR} bytes"
        ));
    }
    let ephemeral = ctx.get(ATTR_EPHEMERAL).map(String::as_str) == Some("true");
    let (reference, from) = match ctx.get(ATTR_REFERENCE) {
        Some(r) => (r.clone(), "volumeAttributes.reference"),
        None if ephemeral => {
            return Err("an inline volume needs volumeAttributes.reference (the model, e.g. registry.example.com/models/qwen@sha256:…)".into());
        }
        None => (req.volume_id.clone(), "volumeHandle"),
    };
    let reference: Reference = reference
        .parse()
        .map_err(|e| format!("{from} {reference:?} is not a model reference: {e}"))?;
    if !ephemeral && reference.digest.is_none() {
        return Err(format!(
            "{from} {reference} of a persistent volume must be pinned by digest (REPO@sha256:…), so every pod that mounts it sees the same model"
        ));
    }
    let path = match ctx.get(ATTR_PATH).filter(|p| !p.is_empty()) {
        Some(p) => {
            let clean = p.trim_matches('/');
            modelpack_common::extract::safe_relative_path("volumeAttributes.path", clean)
                .map_err(|e| e.to_string())?;
            Some(clean.to_string())
        }
        None => None,
    };
    let include: Vec<String> = ctx
        .get(ATTR_INCLUDE)
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if include.len() > MAX_INCLUDE {
        return Err(format!(
            "volumeAttributes.include has more than {MAX_INCLUDE} globs"
        ));
    }
    for g in &include {
        globset::Glob::new(g).map_err(|e| format!("volumeAttributes.include {g:?}: {e}"))?;
    }
    let prefetch = match ctx.get(ATTR_PREFETCH).map(String::as_str) {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(v) => {
            return Err(format!(
                "volumeAttributes.prefetch is {v:?}: use \"true\" or \"false\""
            ));
        }
    };
    Ok(Publish {
        volume_id: req.volume_id.clone(),
        target,
        reference,
        path,
        include,
        prefetch,
    })
}

/// Credentials from `nodePublishSecretRef`: a `kubernetes.io/dockerconfigjson`
/// secret (`.dockerconfigjson`, its `auths` for the model's registry), or
/// `username` + `password` keys. `None`: use the node's credentials.
pub fn credential(
    secrets: &std::collections::HashMap<String, String>,
    registry: &str,
) -> Result<Option<Credential>, Invalid> {
    if let Some(json) = secrets.get(".dockerconfigjson") {
        return modelpack_common::credentials::from_docker_config_json(
            json.as_bytes(),
            "the nodePublishSecretRef secret's .dockerconfigjson",
            registry,
        )
        // The message names the field, never its content.
        .map_err(|e| e.to_string());
    }
    match (secrets.get("username"), secrets.get("password")) {
        (Some(u), Some(p)) => Ok(Some(Credential::Basic {
            username: u.clone(),
            password: p.clone(),
        })),
        (None, None) => Ok(None),
        _ => Err("the nodePublishSecretRef secret needs both username and password (or .dockerconfigjson)".into()),
    }
}

/// The globs of `include` as one matcher (already validated by [`parse`]).
pub fn matcher(include: &[String]) -> Option<globset::GlobSet> {
    if include.is_empty() {
        return None;
    }
    let mut b = globset::GlobSetBuilder::new();
    for g in include {
        if let Ok(g) = globset::GlobBuilder::new(g)
            .literal_separator(false)
            .build()
        {
            b.add(g);
        }
    }
    b.build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi_proto::VolumeCapability;
    use crate::csi_proto::volume_capability::{AccessMode, MountVolume};

    fn req(id: &str, target: &str, ctx: &[(&str, &str)]) -> NodePublishVolumeRequest {
        NodePublishVolumeRequest {
            volume_id: id.into(),
            target_path: target.into(),
            volume_capability: Some(VolumeCapability {
                access_mode: Some(AccessMode { mode: 3 }),
                access_type: Some(AccessType::Mount(MountVolume::default())),
            }),
            volume_context: ctx
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    const PINNED: &str = "127.0.0.1:5000/m/x@sha256:1234567890abcdef1234567890abcdef1234567890abcdef1234567890abcdef";

    #[test]
    fn ephemeral_and_persistent_requests() {
        let e = parse(&req(
            "csi-abc",
            "/var/lib/kubelet/pods/p/volumes/v/mount",
            &[
                (ATTR_EPHEMERAL, "true"),
                (ATTR_REFERENCE, "127.0.0.1:5000/m/x:v1"),
                (ATTR_PATH, "/sub/"),
                (ATTR_INCLUDE, "*.json, tokenizer*"),
                (ATTR_PREFETCH, "false"),
            ],
        ))
        .unwrap();
        assert_eq!(e.path.as_deref(), Some("sub"));
        assert_eq!(e.include, ["*.json", "tokenizer*"]);
        assert_eq!(e.prefetch, Some(false));
        let p = parse(&req(PINNED, "/t", &[])).unwrap();
        assert_eq!(p.reference.to_string(), PINNED);
    }

    #[test]
    fn bad_requests_say_which_field() {
        let cases: Vec<(NodePublishVolumeRequest, &str)> = vec![
            (req("", "/t", &[]), "volume_id"),
            (req("v", "", &[]), "target_path"),
            (req("v", "rel/t", &[]), "absolute"),
            (
                req("v", "/t", &[(ATTR_EPHEMERAL, "true")]),
                "volumeAttributes.reference",
            ),
            (req("127.0.0.1:5000/m/x:v1", "/t", &[]), "pinned by digest"),
            (
                req("v", "/t", &[(ATTR_REFERENCE, "Not A Ref")]),
                "not a model reference",
            ),
            (req(PINNED, "/t", &[(ATTR_PATH, "../etc")]), ".."),
            (req(PINNED, "/t", &[(ATTR_PREFETCH, "yes")]), "prefetch"),
            (req(PINNED, "/t", &[(ATTR_INCLUDE, "a[")]), "include"),
        ];
        for (r, want) in cases {
            let err = parse(&r).unwrap_err();
            assert!(err.contains(want), "{err} (wanted {want})");
        }
        let mut block = req(PINNED, "/t", &[]);
        block.volume_capability.as_mut().unwrap().access_type =
            Some(AccessType::Block(Default::default()));
        assert!(parse(&block).unwrap_err().contains("block"));
        let mut none = req(PINNED, "/t", &[]);
        none.volume_capability = None;
        assert!(parse(&none).unwrap_err().contains("volume_capability"));
    }

    #[test]
    fn secrets() {
        let m = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(matches!(
            credential(&m(&[("username", "u"), ("password", "p")]), "r").unwrap(),
            Some(Credential::Basic { .. })
        ));
        assert!(credential(&m(&[("username", "u")]), "r").is_err());
        let dc = r#"{"auths":{"r.example:5000":{"auth":"dTpw"}},"credHelpers":{"r.example:5000":"evil"}}"#;
        match credential(&m(&[(".dockerconfigjson", dc)]), "r.example:5000").unwrap() {
            Some(Credential::Basic { username, password }) => {
                assert_eq!((username.as_str(), password.as_str()), ("u", "p"))
            }
            other => panic!("{other:?}"),
        }
        assert!(credential(&m(&[]), "r").unwrap().is_none());
    }
}
