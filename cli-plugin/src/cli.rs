//! Command-line definitions. Flags follow modctl where it has them
//! (`build -t REF -f Modelfile DIR`, `extract REF --output DIR`,
//! `validate --config FILE`, `inspect --json REF`) and oras for registry
//! options in standalone mode.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Build, inspect, push, pull and mount CNCF ModelPack model artifacts",
    long_about = "Build, inspect, push, pull and mount CNCF ModelPack model artifacts.\n\nModels are stored in a local OCI image layout (~/.modelpack, $MODELPACK_HOME or --storage-dir) that skopeo and other OCI tools can read.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Local store directory [default: $MODELPACK_HOME or ~/.modelpack]
    #[arg(long, global = true, value_name = "DIR")]
    pub storage_dir: Option<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only errors and requested data
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a model artifact from a directory and a Modelfile
    Build(crate::commands::build::BuildArgs),
    /// Show a model's manifest, config and layers
    Inspect(crate::commands::inspect::InspectArgs),
    /// List models in the local store
    #[command(alias = "list")]
    Ls(crate::commands::ls::LsArgs),
    /// Give a stored model another reference
    Tag(crate::commands::tag::TagArgs),
    /// Remove references (a tag only untags; a digest removes the manifest and all its tags)
    #[command(alias = "remove")]
    Rm(crate::commands::rm::RmArgs),
    /// Delete blobs no stored model references
    Prune(crate::commands::prune::PruneArgs),
    /// Verify every blob and reference in the local store; --repair removes bad blobs and debris
    Fsck(crate::commands::fsck::FsckArgs),
    /// Restore a stored model's files into a directory
    Extract(crate::commands::extract::ExtractArgs),
    /// Validate a model (by reference) or a config/manifest file against the ModelPack spec
    Validate(crate::commands::validate::ValidateArgs),
    /// Work with Modelfiles
    Modelfile {
        #[command(subcommand)]
        command: crate::commands::modelfile::ModelfileCommand,
    },
    /// Add a chunk index (lazy-pull verification) to a model another tool pushed, as a referrer
    Index(crate::commands::index::IndexArgs),
    /// Upload a stored model to a registry
    Push(crate::commands::push::PushArgs),
    /// Download a model into the local store (or straight into a directory)
    Pull(crate::commands::pull::PullArgs),
    /// Download only the files matching patterns, straight into a directory
    Fetch(crate::commands::fetch::FetchArgs),
    /// New model = a model plus (or replacing) one file; remote→remote without pulling weights
    Attach(crate::commands::attach::AttachArgs),
    /// Pre-upload one file as a blob so a later `build --output-remote` skips it
    Upload(crate::commands::upload::UploadArgs),
    /// Log in to a registry (stored like `docker login` stores it)
    Login(crate::commands::login::LoginArgs),
    /// Remove stored credentials for a registry
    Logout(crate::commands::login::LogoutArgs),
    /// Mount a model read-only at a directory: lazily from the store or its registry, or via containerd
    Mount(crate::commands::mount::MountArgs),
    /// Print a ready directory with a model's files as one JSON line (mounting it lazily)
    Resolve(crate::commands::resolve::ResolveArgs),
    /// Unmount a model mounted with `mount`
    Umount(crate::commands::mount::UmountArgs),
    /// Sign a stored model (OpenSSF Model Signing, from its layer digests) and attach the signature
    Sign(crate::commands::sign::SignArgs),
    /// Check a model's signature (or an extracted directory's) against a public key
    Verify(crate::commands::verify::VerifyArgs),
    /// List what is attached to a model: chunk indexes, signatures, SBOMs
    Referrers(crate::commands::referrers::ReferrersArgs),
    /// Print a shell completion script: `source <(modelpack completion bash)`
    Completion {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print version information
    Version,
}
