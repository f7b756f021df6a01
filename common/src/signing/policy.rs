//! The node's signing policy (snapshotter and CSI): registries → public
//! keys. A model from a listed registry (or any, under `"*"`) is attached
//! only when one of its signature referrers verifies with one of the keys
//! against its manifest — before a layer is committed or a volume mounted.
//!
//! The chain that then covers every byte served: signature → each file's
//! sha256 = its raw layer's digest → the manifest (fetched by the digest the
//! Prepare names, verified) → the chunk index it binds → each chunk. Tar
//! layers break that chain without reading them (their files' digests are
//! not in the manifest), so under a policy a model with tar layers is
//! refused with that reason; build it raw (the default).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::reference::Reference;
use crate::registry::RegistryClient;

use super::keys::PublicKey;

pub struct NodePolicy {
    keys: BTreeMap<String, Vec<PublicKey>>,
    /// Manifests already verified, by digest (a model's layers Prepare one
    /// by one, and each Prepare checks its labels against the manifest).
    verified: Mutex<HashMap<Digest, Arc<Manifest>>>,
}

impl NodePolicy {
    /// Loads every key named by `rules` (registry host or `*` → PEM files).
    pub fn load(rules: &BTreeMap<String, Vec<PathBuf>>) -> Result<Option<NodePolicy>> {
        if rules.is_empty() {
            return Ok(None);
        }
        let mut keys = BTreeMap::new();
        for (host, paths) in rules {
            if paths.is_empty() {
                return Err(Error::Invalid(format!("[signing] {host:?} lists no key")));
            }
            let loaded = paths
                .iter()
                .map(|p| PublicKey::load(p))
                .collect::<Result<Vec<_>>>()?;
            keys.insert(host.clone(), loaded);
        }
        Ok(Some(NodePolicy {
            keys,
            verified: Mutex::new(HashMap::new()),
        }))
    }

    /// The keys a model from `registry` must be signed with, if any.
    pub fn keys_for(&self, registry: &str) -> Option<&[PublicKey]> {
        self.keys
            .get(registry)
            .or_else(|| self.keys.get("*"))
            .map(Vec::as_slice)
    }

    /// Checks `reference@digest` against the policy. Returns the verified
    /// manifest, which is what the signature covers: a caller serving a layer
    /// must check that the layer is one of it (`ModelLayerLabels::layer_in`).
    /// `None` for registries the policy does not list.
    pub async fn check(
        &self,
        client: &RegistryClient,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<Option<Arc<Manifest>>> {
        let Some(keys) = self.keys_for(&reference.registry) else {
            return Ok(None);
        };
        if let Some(m) = self.verified.lock().unwrap().get(digest) {
            return Ok(Some(m.clone()));
        }
        let pinned = reference.with_digest(digest.clone());
        let f = client.get_manifest(&pinned).await?;
        let m = Arc::new(Manifest::parse(&f.bytes, &format!("manifest of {pinned}"))?);
        let files = super::files_from_raw_manifest(&m)?.ok_or_else(|| {
            Error::Validation(format!(
                "{pinned} has tar layers: the node's signing policy covers raw-layer models only (their file digests are in the manifest)"
            ))
        })?;
        let bundles: Vec<(String, Vec<u8>)> =
            super::referrer::fetch_remote(client, reference, &f.digest)
                .await?
                .into_iter()
                .map(|(d, _, b)| (format!("signature {d}"), b))
                .collect();
        let mut why = Vec::new();
        for key in keys {
            match super::verify_any(&bundles, key, &files, &pinned.to_string()) {
                Ok(_) => {
                    let mut v = self.verified.lock().unwrap();
                    if v.len() > 4096 {
                        v.clear();
                    }
                    v.insert(digest.clone(), m.clone());
                    return Ok(Some(m));
                }
                Err(e) => why.push(e.to_string()),
            }
        }
        Err(Error::Validation(why.join("; ")))
    }
}
