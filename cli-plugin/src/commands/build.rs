//! `build -t REF [-f Modelfile] [DIR]`: pack a model directory into the local store.
//! Without a Modelfile the files are classified automatically, like
//! `modelfile generate` would (modctl#362).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use modelpack_common::manifest::Descriptor;
use modelpack_common::media::{self, Family, LayerFormat};
use modelpack_common::modelfile::{self, GenerateOptions, Modelfile};
use modelpack_common::pack::{BuildPlan as Plan, BuildRequest, pack_to_store, plan_build};

use super::{Ctx, parse_ref};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Reference to build, e.g. 127.0.0.1:5000/models/qwen:v1
    #[arg(short = 't', long = "target", value_name = "REF")]
    pub target: String,
    /// Modelfile path [default: DIR/Modelfile; generated in memory when absent]
    #[arg(short = 'f', long = "modelfile", value_name = "FILE")]
    pub modelfile: Option<PathBuf>,
    /// Model directory (the build context)
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// Layer encoding: raw (one file, default), tar, tar+gzip, tar+zstd
    #[arg(long, default_value = "raw", value_parser = parse_format)]
    pub layer_format: LayerFormat,
    /// Write the legacy vnd.cnai.* / org.cnai.* identifiers (Harbor ≤ 2.15's
    /// model processor); per registry in the config file:
    /// [registries."HOST"] legacy-cnai = true
    #[arg(long)]
    pub legacy_cnai: bool,
    /// Omit descriptor.createdAt and record a fixed file mtime (1970), so the
    /// same files give the same digest anywhere (SOURCE_DATE_EPOCH does the
    /// same with its date); by default files keep their own mtimes
    #[arg(long)]
    pub no_creation_time: bool,
    /// Record real mode/uid/gid/mtime in file metadata (breaks reproducibility across machines)
    #[arg(long)]
    pub keep_metadata: bool,
    /// Stream the build straight to the registry; nothing is stored locally
    #[arg(long)]
    pub output_remote: bool,
    #[command(flatten)]
    pub registry: super::remote::RegistryArgs,
    #[command(flatten)]
    pub transfer: super::remote::TransferArgs,
    /// descriptor.sourceURL
    #[arg(long)]
    pub source_url: Option<String>,
    /// descriptor.revision (e.g. a git commit)
    #[arg(long)]
    pub source_revision: Option<String>,
    /// Chunk size of the chunk indexes of raw and tar layers (a power of two, 64KiB..64MiB; e.g. 4MiB)
    #[arg(long, default_value = "4MiB", value_parser = parse_chunk_size)]
    pub chunk_size: u64,
    /// Make no chunk indexes (layers then stay eager for lazy pulls)
    #[arg(long)]
    pub no_chunk_index: bool,
    /// Share the model files' extents with the store's raw layers: auto
    /// (where the filesystem can: XFS reflink=1, btrfs; no second copy on
    /// disk), always (or fail), never
    #[arg(long, default_value = "auto", value_name = "WHEN", value_parser = super::parse_reflink)]
    pub reflink: modelpack_common::kcopy::Reflink,
}

/// `4194304`, `4MiB`, `4M`, `64KiB`, `64K`: a size checked like any chunk size from outside.
pub fn parse_chunk_size(s: &str) -> Result<u64, String> {
    let bytes = super::parse_bytes(s)?;
    modelpack_common::chunk::check_chunk_size(bytes).map_err(|e| e.to_string())
}

fn parse_format(s: &str) -> Result<LayerFormat, String> {
    s.parse()
        .map_err(|e: modelpack_common::Error| e.to_string())
}

/// The build as common plans it, after the CLI's part: finding or
/// generating the Modelfile and picking the identifier family.
pub fn plan(args: &BuildArgs, ctx: &Ctx) -> Result<Plan> {
    let context = &args.context;
    if !context.is_dir() {
        anyhow::bail!("build context {} is not a directory", context.display());
    }
    let (mf, text, generated) = load_modelfile(args.modelfile.as_deref(), context, ctx)?;
    let family = if args.legacy_cnai {
        Family::Cnai
    } else {
        // A registry configured for the legacy identifiers (Harbor) gets them
        // without a flag, so CI publishing there cannot forget it.
        let settings = &ctx.settings;
        let target = super::parse_ref(&args.target)?;
        match settings.family_for(&target.registry) {
            Some(f) => {
                ctx.out.status(format!(
                    "writing the legacy cnai identifiers for {} ({})",
                    target.registry,
                    settings.where_set()
                ));
                f
            }
            None => Family::Cncf,
        }
    };
    let request = BuildRequest {
        family,
        format: args.layer_format,
        no_creation_time: args.no_creation_time,
        keep_metadata: args.keep_metadata,
        concurrency: ctx.concurrency(args.transfer.concurrency),
        chunk_size: (!args.no_chunk_index).then_some(args.chunk_size),
        source_url: args.source_url.clone(),
        source_revision: args.source_revision.clone(),
        reflink: args.reflink,
    };
    let plan = plan_build(context, &mf, text, generated, &request)?;
    if args.layer_format != LayerFormat::Raw {
        // DMR's UnpackFromLayers links every annotated layer's blob under its
        // filepath without untarring it (docs/compatibility.md).
        ctx.out.status(
            "note: Docker Model Runner cannot read tar layers (it would serve the archive as the file); build with the default --layer-format raw for `docker model`",
        );
    }
    if !plan.has_weights() {
        ctx.out.status(
            "warning: no MODEL layers: is this a model? (the Modelfile names no weight file)",
        );
    }
    Ok(plan)
}

fn load_modelfile(
    explicit: Option<&Path>,
    context: &Path,
    ctx: &Ctx,
) -> Result<(Modelfile, String, bool)> {
    let path = explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| context.join("Modelfile"));
    if explicit.is_none() && !path.exists() {
        let mf = modelfile::generate(context, &GenerateOptions::default())?;
        ctx.out.status(format!(
            "no Modelfile in {}: classified files automatically (review with `{} modelfile generate {}`)",
            context.display(),
            ctx.display_name,
            context.display()
        ));
        let text = mf.to_text();
        return Ok((mf, text, true));
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read Modelfile {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "Modelfile".into());
    let mf = modelfile::parse(&text, &name)?;
    Ok((mf, text, false))
}

pub async fn run(args: BuildArgs, ctx: Ctx) -> Result<ExitCode> {
    let reference = parse_ref(&args.target)?;
    if reference.digest.is_some() {
        anyhow::bail!("{reference}: build needs a tag to name the result, not a digest");
    }
    let plan = plan(&args, &ctx)?;
    let total: u64 = plan.files.iter().map(|f| f.size).sum();
    if args.output_remote {
        return build_remote(&args, &ctx, &reference, plan, total).await;
    }
    let store = ctx.store()?;
    let bar = ctx.out.bytes_bar(total, "building");
    let pb = bar.clone();
    let started = std::time::Instant::now();
    let packed = super::blocking(move || {
        // Held until the tag exists, so a concurrent prune cannot free the new blobs.
        let _lease = store.lease()?;
        let p = pack_to_store(
            &store,
            &plan.files,
            plan.descriptor,
            plan.settings,
            plan.annotations,
            &plan.opts,
            &|n| pb.inc(n),
        )?;
        let desc = Descriptor::new(
            media::OCI_MANIFEST,
            p.manifest_digest.clone(),
            p.manifest_bytes.len() as u64,
        );
        let mut desc = desc;
        desc.artifact_type = p.manifest.artifact_type.clone();
        store.tag(&reference, &desc)?;
        if let Some((_, bytes)) = &p.referrer {
            modelpack_common::chunkindex::local::put_referrer(&store, &reference, bytes)?;
        }
        Ok((p, reference))
    })
    .await?;
    bar.finish_and_clear();
    let (p, reference) = packed;
    let elapsed = started.elapsed().as_secs_f64();
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({
            "reference": reference.to_string(),
            "digest": p.manifest_digest.to_string(),
            "layers": p.manifest.layers.len(),
            "size": p.manifest.content_size(),
            "bytes": total,
            "bytesRead": p.bytes_read,
            "layersCached": p.layers_cached,
            "chunkIndex": p.referrer.as_ref().map(|(d, _)| d.to_string()),
            "seconds": elapsed,
        }))?;
    } else {
        ctx.out.status(format!(
            "built {reference} ({} layers, {}, {} unchanged) in {elapsed:.2}s",
            p.manifest.layers.len(),
            crate::output::human_size(total),
            p.layers_cached
        ));
        ctx.out.data(format!("{}", p.manifest_digest));
    }
    Ok(ExitCode::SUCCESS)
}

async fn build_remote(
    args: &BuildArgs,
    ctx: &Ctx,
    reference: &modelpack_common::Reference,
    plan: Plan,
    total: u64,
) -> Result<ExitCode> {
    let client = args.registry.transfer_client(ctx, &args.transfer)?;
    let store = ctx.store()?;
    let bars =
        super::remote::Bars::new(ctx, total, &format!("building to {}", reference.repository));
    let started = std::time::Instant::now();
    let report = modelpack_common::transfer::pack_to_registry(
        &client,
        &store,
        reference,
        &plan.files,
        plan.descriptor,
        plan.settings,
        plan.annotations,
        &plan.opts,
        &bars,
    )
    .await;
    bars.finish();
    let report = report?;
    if ctx.out.json {
        let mut v = serde_json::to_value(&report)?;
        v["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
        ctx.out.print_json(&v)?;
    } else {
        ctx.out.status(format!(
            "built and pushed {} ({} layers, {} sent) in {:.2}s",
            report.reference,
            report.blobs.len(),
            crate::output::human_size(report.bytes_sent),
            started.elapsed().as_secs_f64()
        ));
        ctx.out.data(format!("{}", report.digest));
    }
    Ok(ExitCode::SUCCESS)
}
