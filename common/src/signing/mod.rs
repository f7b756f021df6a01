//! OpenSSF Model Signing (OMS) signatures made from layer digests, attached
//! as OCI referrers and checked on pull (docs/signing.md).
//!
//! The chain a signature anchors: the bundle's DSSE signature → the
//! statement's file digests and their ROOT → the manifest's layer digests
//! (a raw layer's digest is its file's sha256; a tar layer's files are
//! hashed from the stored blob) → the manifest digest → the chunk index it
//! binds → every lazily served chunk. So a verified signature covers every
//! byte a reader is served, and signing a 100 GB model reads no weights.

pub mod bundle;
pub mod keys;
pub mod policy;
pub mod referrer;
pub mod resources;

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::error::{Error, Result};

pub use bundle::{BUNDLE_MEDIA_TYPE, Bundle, Mismatch};
pub use keys::{PrivateKey, PublicKey};

/// The name of the build recipe among a signature's resources.
pub const MODELFILE: &str = "Modelfile";

/// Checks `bundle` with `key` against the model's files; the error names
/// what differs (which file, missing, extra) or why the signature fails.
///
/// Exactly the statement's own `ignore_paths` are left out of the
/// comparison (what `model_signing verify` does; the list is signed), so a
/// file nobody signed — an injected `Modelfile` too — is refused unless the
/// signer said to ignore it. `modelfile` is the sha256 of the Modelfile the
/// build used (the manifest's annotation, [`modelfile_digest`]): not a file
/// the model serves, but a signature made over the build directory lists it,
/// so it is checked — byte for byte — when the signature names `Modelfile`
/// and the model has no file of that name.
pub fn verify_files(
    bundle: &Bundle,
    key: &PublicKey,
    files: &BTreeMap<String, Digest>,
    modelfile: Option<&Digest>,
    what: &str,
) -> Result<()> {
    let st = bundle.verify(key, what)?;
    let signed = st.files(what)?;
    let ignore = &st.predicate.serialization.ignore_paths;
    let mut actual: BTreeMap<String, Digest> = files
        .iter()
        .filter(|(p, _)| !resources::ignored(p, ignore))
        .map(|(p, d)| (p.clone(), d.clone()))
        .collect();
    if let Some(d) = modelfile
        && signed.contains_key(MODELFILE)
        && !actual.contains_key(MODELFILE)
    {
        actual.insert(MODELFILE.to_string(), d.clone());
    }
    let m = bundle::compare(&signed, &actual);
    if !m.is_empty() {
        return Err(Error::Validation(format!(
            "{what} does not match the model: {m}"
        )));
    }
    Ok(())
}

/// The first of `bundles` that verifies with `key` against `files` (and
/// the build's `modelfile`, see [`verify_files`]), or why none did.
pub fn verify_any(
    bundles: &[(String, Vec<u8>)],
    key: &PublicKey,
    files: &BTreeMap<String, Digest>,
    modelfile: Option<&Digest>,
    model: &str,
) -> Result<String> {
    if bundles.is_empty() {
        return Err(Error::Validation(format!(
            "{model} has no signature (no {BUNDLE_MEDIA_TYPE} referrer)"
        )));
    }
    let mut why = Vec::new();
    for (name, bytes) in bundles {
        let r =
            Bundle::parse(bytes, name).and_then(|b| verify_files(&b, key, files, modelfile, name));
        match r {
            Ok(()) => return Ok(name.clone()),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(Error::Validation(format!(
        "no signature of {model} verifies with this key: {}",
        why.join("; ")
    )))
}

/// sha256 of the Modelfile text a build recorded in the manifest, if any.
pub fn modelfile_digest(manifest: &crate::manifest::Manifest) -> Option<Digest> {
    [crate::media::Family::Cncf, crate::media::Family::Cnai]
        .iter()
        .find_map(|f| manifest.annotations.get(f.modelfile_annotation()))
        .map(|text| Digest::of(text.as_bytes()))
}

/// What `modelpack sign` leaves out of a model's signature (and records as
/// `ignore_paths`, so both tools skip them on verify): git's files, as
/// `model_signing` does by default, and — when the model was built from a
/// Modelfile (recorded in the manifest) and serves no file of that name —
/// `Modelfile`, so `model_signing verify` passes on the build directory
/// that held it as well as on an extracted one. (The manifest does not say
/// whether the Modelfile was in the directory or generated; ignoring it costs
/// nothing in the second case: no file of the model is served under it.)
pub fn ignore_paths_for(
    manifest: &crate::manifest::Manifest,
    files: &BTreeMap<String, Digest>,
) -> Vec<String> {
    let mut out: Vec<String> = bundle::DEFAULT_IGNORE
        .iter()
        .map(|s| s.to_string())
        .collect();
    if modelfile_digest(manifest).is_some() && !files.contains_key(MODELFILE) {
        out.push(MODELFILE.to_string());
    }
    out
}

/// The files of a manifest a signature can be checked against *before*
/// any blob is fetched: every layer raw (its digest is its file's sha256).
/// `None` when a tar layer's files are only known from its bytes.
pub fn files_from_raw_manifest(
    manifest: &crate::manifest::Manifest,
) -> Result<Option<BTreeMap<String, Digest>>> {
    let mut out = BTreeMap::new();
    for l in &manifest.layers {
        if crate::extract::layer_format(l) != crate::media::LayerFormat::Raw {
            return Ok(None);
        }
        let name = crate::extract::layer_name(l);
        let p = l.filepath().ok_or_else(|| {
            Error::Artifact(format!(
                "layer {name} has no file path, so no signature covers it"
            ))
        })?;
        let rel = crate::extract::safe_relative_path(&name, p)?
            .display()
            .to_string();
        out.insert(rel, l.digest.clone());
    }
    Ok(Some(out))
}

/// The model's name in a statement: its config's name, else the repository's last part.
pub fn subject_name(config: &[u8], reference: &crate::reference::Reference) -> String {
    crate::config::ModelConfig::parse(config, "config")
        .ok()
        .and_then(|c| c.descriptor.name)
        .unwrap_or_else(|| {
            reference
                .repository
                .rsplit('/')
                .next()
                .unwrap_or(&reference.repository)
                .to_string()
        })
}
