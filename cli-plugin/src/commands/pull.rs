//! `pull REF`: into the local store (blobs already there are skipped,
//! partial downloads resume); `--extract-dir DIR` also extracts;
//! `--extract-from-remote` streams straight into DIR with nothing stored.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use modelpack_common::extract::{ExtractOptions, extract_from_store};
use modelpack_common::transfer::{pull_to_dir, pull_to_store_checked};

use super::remote::{Bars, RegistryArgs};
use super::{Ctx, parse_ref};
use crate::output::human_size;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Model reference (tag or digest)
    pub reference: String,
    /// Also extract the files into DIR
    #[arg(long, value_name = "DIR")]
    pub extract_dir: Option<PathBuf>,
    /// Replace files in --extract-dir whose content differs (else refused before anything is written)
    #[arg(long, requires = "extract_dir")]
    pub force: bool,
    /// Stream files straight into --extract-dir, keeping nothing in the store
    #[arg(long, requires = "extract_dir")]
    pub extract_from_remote: bool,
    /// Store, write or hand to containerd nothing unless the model has an
    /// OpenSSF Model Signing signature (a referrer) that verifies with this
    /// public key [default: the registry's verify-key in the config file]
    #[arg(long, value_name = "PUB.pem")]
    pub verify_key: Option<PathBuf>,
    /// Record the model in containerd and prepare its layers through the modelpack snapshotter
    #[arg(long, conflicts_with_all = ["extract_dir", "extract_from_remote"])]
    pub containerd: bool,
    #[command(flatten)]
    pub containerd_args: crate::containerd::ContainerdArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub transfer: super::remote::TransferArgs,
}

pub async fn run(args: PullArgs, ctx: Ctx) -> Result<ExitCode> {
    let remote = parse_ref(&args.reference)?;
    let client = args.registry.transfer_client(&ctx, &args.transfer)?;
    // Before anything is handed on (containerd, a directory, the store): a
    // raw model's signature is checked from its manifest here.
    let unstored = if args.containerd {
        Some("--containerd (the node's snapshotter fetches the layers)")
    } else if args.extract_from_remote {
        Some("--extract-from-remote")
    } else {
        None
    };
    let verified =
        super::verify::before_pull(&ctx, args.verify_key.as_deref(), unstored, &client, &remote)
            .await?;
    if args.containerd {
        let pinned = verified.as_ref().map(|(p, _, _, _)| p);
        return pull_containerd(&args, &ctx, &client, &remote, pinned).await;
    }
    let remote = match &verified {
        Some((pinned, _, _, _)) => pinned.clone(),
        None => remote,
    };
    let bars = Bars::new(&ctx, 0, &format!("pulling {}", remote.repository));
    let mut report = if args.extract_from_remote {
        let dir = args.extract_dir.clone().expect("clap requires it");
        pull_to_dir(
            &client,
            &ctx.store()?,
            &remote,
            &dir,
            ctx.concurrency(args.transfer.concurrency),
            args.force,
            &bars,
        )
        .await
    } else {
        // Tar layers: their files are checked from the downloaded blobs while
        // they are still staged, so a refusal keeps nothing (docs/signing.md).
        let check = |m: &modelpack_common::manifest::Manifest,
                     open: &modelpack_common::transfer::OpenBlob<'_>| {
            let Some((pinned, true, key, bundles)) = &verified else {
                return Ok(());
            };
            let files = modelpack_common::signing::resources::from_manifest_with(m, open)?;
            let modelfile = modelpack_common::signing::modelfile_digest(m);
            modelpack_common::signing::verify_any(
                bundles,
                key,
                &files,
                modelfile.as_ref(),
                &pinned.to_string(),
            )
            .map(|_| ())
        };
        pull_to_store_checked(
            &client,
            &ctx.store()?,
            &remote,
            ctx.concurrency(args.transfer.concurrency),
            &bars,
            matches!(&verified, Some((_, true, _, _))).then_some(&check as _),
        )
        .await
    };
    bars.finish();
    if let (Ok(r), Some(dir), false) = (&mut report, &args.extract_dir, args.extract_from_remote) {
        let store = ctx.store()?;
        let manifest = r.manifest.clone().expect("pull returns the manifest");
        let dir = dir.clone();
        let total = manifest.layers.iter().map(|l| l.size).sum();
        let bars = std::sync::Arc::new(Bars::new(&ctx, total, "extracting"));
        let opts = ExtractOptions {
            concurrency: ctx.concurrency(args.transfer.concurrency),
            force: args.force,
            progress: Some(bars.clone()),
            ..Default::default()
        };
        let extracted =
            super::blocking(move || Ok(extract_from_store(&store, &manifest, &dir, &opts)?)).await;
        bars.finish();
        r.extract = Some(extracted?);
    }
    let report = report?;
    for w in &report.warnings {
        ctx.out.status(format!(
            "warning: {}",
            modelpack_common::text::escape_control(w)
        ));
    }
    if ctx.out.json {
        ctx.out.print_json(&report)?;
    } else {
        let blobs = report.blobs_downloaded + report.blobs_skipped;
        ctx.out.status(if report.bytes_received == 0 {
            format!(
                "pulled {} ({} layers; all {blobs} blobs already present, nothing downloaded)",
                report.reference, report.layers
            )
        } else {
            format!(
                "pulled {} ({} layers; {} of {blobs} blobs downloaded, {} already present; {} at {}/s)",
                report.reference,
                report.layers,
                report.blobs_downloaded,
                report.blobs_skipped,
                human_size(report.bytes_received),
                human_size(bars.throughput() as u64)
            )
        });
        for b in report.blobs.iter().filter(|b| b.resumed_at.is_some()) {
            ctx.out.status(format!(
                "resumed {} at {} of {}",
                modelpack_common::text::escape_control(&b.name),
                human_size(b.resumed_at.unwrap_or(0)),
                human_size(b.size)
            ));
        }
        if report.chunk_indexes > 0 {
            ctx.out.status(format!(
                "copied {} chunk index referrer{} along",
                report.chunk_indexes,
                if report.chunk_indexes == 1 { "" } else { "s" }
            ));
        }
        if let (Some(x), Some(dir)) = (&report.extract, &args.extract_dir) {
            ctx.out.status(format!(
                "extracted to {}: {} written, {} unchanged",
                dir.display(),
                x.files_written,
                x.files_skipped
            ));
        }
        ctx.out.data(format!("{}", report.digest));
    }
    Ok(ExitCode::SUCCESS)
}

/// `pinned`: the verified manifest digest (with `--verify-key`), so the
/// manifest containerd records is the one whose signature was checked even if
/// the tag moved since; the image keeps the name the user gave.
async fn pull_containerd(
    args: &PullArgs,
    ctx: &Ctx,
    client: &modelpack_common::registry::RegistryClient,
    remote: &modelpack_common::Reference,
    pinned: Option<&modelpack_common::Reference>,
) -> Result<ExitCode> {
    use modelpack_common::manifest::Manifest;
    let started = std::time::Instant::now();
    let fetched = client.get_manifest(pinned.unwrap_or(remote)).await?;
    let manifest = Manifest::parse(&fetched.bytes, &format!("manifest of {remote}"))?;
    match modelpack_common::peer::ArtifactKind::of(&manifest) {
        None => anyhow::bail!(
            "{}",
            modelpack_common::peer::not_a_model(&remote.to_string(), &manifest)
        ),
        Some(k) if !k.is_modelpack() => anyhow::bail!(
            "{remote} is a {} artifact; containerd attach serves ModelPack artifacts only\nhint: `pull {remote} --extract-dir DIR` restores its files",
            k.describe()
        ),
        Some(_) => {}
    }
    let config =
        modelpack_common::transfer::fetch_small_blob(client, remote, &manifest.config).await?;
    let top = crate::containerd::pull(
        &args.containerd_args,
        &remote.to_string(),
        &fetched.bytes,
        &manifest,
        &config,
    )
    .await?;
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({"reference": remote.to_string(), "digest": fetched.digest.to_string(), "chainId": top, "layers": manifest.layers.len(), "seconds": started.elapsed().as_secs_f64()}))?;
    } else {
        ctx.out.status(format!(
            "{remote} is in containerd (namespace {}, snapshotter {}); top chain {top}",
            args.containerd_args.namespace, args.containerd_args.snapshotter
        ));
        ctx.out.data(format!("{}", fetched.digest));
    }
    Ok(ExitCode::SUCCESS)
}
