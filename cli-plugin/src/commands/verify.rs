//! `verify REF --key PUB.pem`: checks a model's OpenSSF Model Signing
//! signature — the DSSE signature, the statement's ROOT, and every signed
//! file against the manifest's digests (no bytes read for raw layers) — and
//! says which file differs. The signature comes from the model's referrers
//! (local, or the registry's with `--remote`) or from `--signature FILE`.
//! `verify --dir DIR --signature FILE` checks an extracted directory the way
//! `model_signing verify` does.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use modelpack_common::signing::{self, PublicKey, referrer, resources};

use super::remote::RegistryArgs;
use super::{Ctx, parse_ref};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["reference", "dir"])))]
pub struct VerifyArgs {
    /// Model reference (in the store; with --remote, in its registry)
    pub reference: Option<String>,
    /// EC public key (PEM)
    #[arg(long, value_name = "PUB.pem")]
    pub key: PathBuf,
    /// The signature bundle to check instead of the model's referrers
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,
    /// Check an extracted model directory (needs --signature)
    #[arg(
        long,
        value_name = "DIR",
        requires = "signature",
        conflicts_with = "reference"
    )]
    pub dir: Option<PathBuf>,
    /// Find the signature and the manifest in the registry (tar layers still need the store)
    #[arg(long)]
    pub remote: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

fn read(p: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
}

pub async fn run(args: VerifyArgs, ctx: Ctx) -> Result<ExitCode> {
    let key = PublicKey::load(&args.key)?;
    let given = match &args.signature {
        Some(p) => Some((p.display().to_string(), read(p)?)),
        None => None,
    };
    let (what, files, bundles) = if let Some(dir) = &args.dir {
        // The signature file itself is not part of the model when it lies inside.
        let skip: Vec<String> = args
            .signature
            .as_ref()
            .and_then(|s| std::fs::canonicalize(s).ok())
            .zip(std::fs::canonicalize(dir).ok())
            .and_then(|(s, d)| {
                s.strip_prefix(&d)
                    .ok()
                    .map(|r| r.to_string_lossy().to_string())
            })
            .into_iter()
            .collect();
        let files = resources::from_dir(dir, &skip)?;
        (
            dir.display().to_string(),
            files,
            vec![given.expect("clap requires --signature")],
        )
    } else {
        let reference = parse_ref(args.reference.as_deref().expect("clap requires one"))?;
        let (digest, manifest, store) = if args.remote {
            let client = args.registry.client(&ctx)?;
            let f = client.get_manifest(&reference).await?;
            let m = modelpack_common::manifest::Manifest::parse(
                &f.bytes,
                &format!("manifest of {reference}"),
            )?;
            let bundles = match &given {
                Some(g) => vec![g.clone()],
                None => referrer::fetch_remote(&client, &reference, &f.digest)
                    .await?
                    .into_iter()
                    .map(|(d, _, b)| (format!("signature {d}"), b))
                    .collect(),
            };
            let files = match signing::files_from_raw_manifest(&m)? {
                Some(f) => f,
                None => resources::from_manifest(&ctx.existing_store()?, &m)?,
            };
            let name = reference.to_string();
            let modelfile = signing::modelfile_digest(&m);
            return finish(
                &ctx,
                &name,
                &f.digest.to_string(),
                &key,
                (&files, modelfile.as_ref()),
                &bundles,
            );
        } else {
            let store = ctx.existing_store()?;
            let loaded = store.load_manifest(&reference)?;
            (loaded.digest, loaded.manifest, store)
        };
        let bundles = match &given {
            Some(g) => vec![g.clone()],
            None => referrer::local(&store, &digest)?
                .into_iter()
                .map(|(d, _, b)| (format!("signature {d}"), b))
                .collect(),
        };
        let files = resources::from_manifest(&store, &manifest)?;
        let modelfile = signing::modelfile_digest(&manifest);
        return finish(
            &ctx,
            &reference.to_string(),
            &digest.to_string(),
            &key,
            (&files, modelfile.as_ref()),
            &bundles,
        );
    };
    finish(&ctx, &what, "", &key, (&files, None), &bundles)
}

/// `model`: the model's files and the sha256 of the Modelfile its build
/// recorded (see `signing::verify_files`).
fn finish(
    ctx: &Ctx,
    what: &str,
    digest: &str,
    key: &PublicKey,
    model: (
        &std::collections::BTreeMap<String, modelpack_common::Digest>,
        Option<&modelpack_common::Digest>,
    ),
    bundles: &[(String, Vec<u8>)],
) -> Result<ExitCode> {
    let (files, modelfile) = model;
    let by = signing::verify_any(bundles, key, files, modelfile, what)?;
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({
            "reference": what,
            "digest": digest,
            "verified": true,
            "signature": by,
            "files": files.len(),
            "key": {"curve": key.curve.name(), "hint": key.hint()},
        }))?;
    } else {
        ctx.out.status(format!(
            "{}: signature verified ({by}; {} files, {} key {})",
            modelpack_common::text::escape_control(what),
            files.len(),
            key.curve.name(),
            &key.hint()[..16]
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// What [`before_pull`] checked: the pull pinned to the verified digest,
/// whether the files must still be checked after download (tar layers), the
/// key and the signatures found.
pub type Verified = (
    modelpack_common::Reference,
    bool,
    modelpack_common::signing::PublicKey,
    Vec<(String, Vec<u8>)>,
);

/// With a verify key: checks the model's signature before any blob is
/// fetched where every layer is raw (the manifest's digests are the files'),
/// and pins the pull to the verified manifest digest. Returns the pinned
/// reference and whether the files must still be checked after download
/// (tar layers, whose files are known only from their bytes). `unstored`
/// names the mode (`fetch`, `--extract-from-remote`, `--containerd`) when the
/// blobs go elsewhere than the store first: then tar layers cannot be checked
/// before they are used, and the pull is refused.
pub async fn before_pull(
    ctx: &Ctx,
    verify_key: Option<&std::path::Path>,
    unstored: Option<&str>,
    client: &modelpack_common::registry::RegistryClient,
    remote: &modelpack_common::Reference,
) -> Result<Option<Verified>> {
    use modelpack_common::signing;
    let settings = &ctx.settings;
    let Some(key_path) = verify_key
        .map(std::path::Path::to_path_buf)
        .or_else(|| settings.verify_key_for(&remote.registry).map(PathBuf::from))
    else {
        return Ok(None);
    };
    let key = signing::PublicKey::load(&key_path)?;
    let f = client.get_manifest(remote).await?;
    let m =
        modelpack_common::manifest::Manifest::parse(&f.bytes, &format!("manifest of {remote}"))?;
    let bundles: Vec<(String, Vec<u8>)> =
        signing::referrer::fetch_remote(client, remote, &f.digest)
            .await?
            .into_iter()
            .map(|(d, _, b)| (format!("signature {d}"), b))
            .collect();
    let pinned = modelpack_common::Reference {
        digest: Some(f.digest.clone()),
        ..remote.clone()
    };
    match signing::files_from_raw_manifest(&m)? {
        Some(files) => {
            let modelfile = signing::modelfile_digest(&m);
            signing::verify_any(
                &bundles,
                &key,
                &files,
                modelfile.as_ref(),
                &remote.to_string(),
            )?;
            Ok(Some((pinned, false, key, bundles)))
        }
        None => {
            if let Some(how) = unstored {
                anyhow::bail!(
                    "{remote} has tar layers, whose files are known only from their bytes: --verify-key needs them in the store first, which {how} skips\nhint: `pull {remote} --verify-key KEY` into the store (then extract), or build the model with raw layers (the default)"
                );
            }
            if bundles.is_empty() {
                signing::verify_any(
                    &bundles,
                    &key,
                    &Default::default(),
                    None,
                    &remote.to_string(),
                )?;
            }
            Ok(Some((pinned, true, key, bundles)))
        }
    }
}
