//! `sign REF --key PRIV.pem [--output model.sig]`: an OpenSSF Model Signing
//! signature of a stored model, made from its layer digests (a raw layer's
//! digest is its file's sha256, so no weight is read; tar layers are
//! streamed once), attached as a referrer in the store so `push` publishes
//! it. `--attach FILE` attaches a bundle another tool (`model_signing
//! sign`) made instead.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use modelpack_common::signing::{self, Bundle, PrivateKey, referrer, resources};

use super::{Ctx, parse_ref};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["key", "attach"])))]
pub struct SignArgs {
    /// Stored model to sign
    pub reference: String,
    /// EC private key (PEM, SEC1 or PKCS#8; P-256, P-384 or P-521)
    #[arg(long, value_name = "PRIV.pem")]
    pub key: Option<PathBuf>,
    /// Also write the signature bundle here (what `model_signing verify` reads)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Attach an existing OMS bundle (e.g. from `model_signing sign`) instead of signing
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key", "output"])]
    pub attach: Option<PathBuf>,
}

pub async fn run(args: SignArgs, ctx: Ctx) -> Result<ExitCode> {
    let reference = parse_ref(&args.reference)?;
    let store = ctx.existing_store()?;
    let loaded = store.load_manifest(&reference)?;
    let (bytes, files) = match (&args.key, &args.attach) {
        (Some(key), _) => {
            let key = PrivateKey::load(key)?;
            let config = store.read_blob(&loaded.manifest.config.digest)?;
            let files = resources::from_manifest(&store, &loaded.manifest)?;
            let name = signing::subject_name(&config, &reference);
            let ignore = signing::ignore_paths_for(&loaded.manifest, &files);
            let bundle = signing::bundle::sign(&files, &ignore, &name, &key)?;
            let signed = files
                .keys()
                .filter(|p| !resources::ignored(p, &ignore))
                .count();
            (bundle.to_bytes(), signed)
        }
        (None, Some(file)) => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let b = Bundle::parse(&bytes, &file.display().to_string())?;
            (bytes, b.dsse_envelope.signatures.len())
        }
        (None, None) => unreachable!("clap requires --key or --attach"),
    };
    let sig = referrer::put_local(&store, &reference, &loaded.digest, &bytes)?;
    if let Some(out) = &args.output {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        modelpack_common::store::write_atomic(out, &bytes, parent)?;
    }
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({
            "reference": reference.to_string(),
            "digest": loaded.digest.to_string(),
            "signature": sig.to_string(),
            "files": files,
            "output": args.output,
        }))?;
    } else {
        ctx.out.status(format!(
            "signed {reference} ({} files); signature referrer {sig}{}; `push` publishes it",
            files,
            args.output
                .as_ref()
                .map(|o| format!(", bundle in {}", o.display()))
                .unwrap_or_default()
        ));
        ctx.out.data(format!("{sig}"));
    }
    Ok(ExitCode::SUCCESS)
}
