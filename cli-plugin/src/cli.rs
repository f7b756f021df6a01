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
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        help_heading = "Global options"
    )]
    pub storage_dir: Option<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Global options")]
    pub verbose: u8,
    /// Print only errors and requested data
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub quiet: bool,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a model artifact from a directory and a Modelfile
    #[command(
        after_help = "Examples:\n  modelpack build -t registry.example.com/models/qwen3:0.6b ./Qwen3-0.6B\n  modelpack modelfile generate ./Qwen3-0.6B && modelpack build -t localhost/qwen3:dev ./Qwen3-0.6B\n  SOURCE_DATE_EPOCH=0 modelpack build --layer-format tar -t localhost/qwen3:repro ./Qwen3-0.6B"
    )]
    Build(crate::commands::build::BuildArgs),
    /// Show a model's manifest, config and layers
    #[command(
        after_help = "Examples:\n  modelpack inspect registry.example.com/models/qwen3:0.6b\n  modelpack inspect --remote registry.example.com/models/qwen3:0.6b --json\n  modelpack inspect --manifest registry.example.com/models/qwen3:0.6b"
    )]
    Inspect(crate::commands::inspect::InspectArgs),
    /// List models in the local store
    #[command(alias = "list")]
    #[command(
        after_help = "Examples:\n  modelpack ls\n  modelpack ls registry.example.com/models/qwen3\n  modelpack ls --format json"
    )]
    Ls(crate::commands::ls::LsArgs),
    /// Give a stored model another reference
    #[command(
        after_help = "Examples:\n  modelpack tag localhost/qwen3:dev registry.example.com/models/qwen3:0.6b"
    )]
    Tag(crate::commands::tag::TagArgs),
    /// Remove references (a tag only untags; a digest removes the manifest and all its tags)
    #[command(alias = "remove")]
    #[command(
        after_help = "Examples:\n  modelpack rm registry.example.com/models/qwen3:0.6b\n  modelpack rm registry.example.com/models/qwen3@sha256:…   # the manifest and all its tags"
    )]
    Rm(crate::commands::rm::RmArgs),
    /// Delete blobs no stored model references
    #[command(after_help = "Examples:\n  modelpack prune --dry-run\n  modelpack prune -f")]
    Prune(crate::commands::prune::PruneArgs),
    /// Verify every blob and reference in the local store; --repair removes bad blobs and debris
    #[command(after_help = "Examples:\n  modelpack fsck\n  modelpack fsck --repair")]
    Fsck(crate::commands::fsck::FsckArgs),
    /// Restore a stored model's files into a directory
    #[command(
        after_help = "Examples:\n  modelpack extract registry.example.com/models/qwen3:0.6b --output /models/qwen3\n  modelpack extract registry.example.com/models/qwen3:0.6b -o /models/qwen3 --force"
    )]
    Extract(crate::commands::extract::ExtractArgs),
    /// Validate a model (by reference) or a config/manifest file against the ModelPack spec
    #[command(
        after_help = "Examples:\n  modelpack validate registry.example.com/models/qwen3:0.6b\n  modelpack validate --strict registry.example.com/models/qwen3:0.6b   # warnings fail too (CI)\n  modelpack validate --config config.json"
    )]
    Validate(crate::commands::validate::ValidateArgs),
    /// Work with Modelfiles
    Modelfile {
        #[command(subcommand)]
        command: crate::commands::modelfile::ModelfileCommand,
    },
    /// Add a chunk index (lazy-pull verification) to a model another tool pushed, as a referrer
    #[command(after_help = "Examples:\n  modelpack index docker.io/ai/smollm2:latest --pin")]
    Index(crate::commands::index::IndexArgs),
    /// Upload a stored model to a registry
    #[command(
        after_help = "Examples:\n  modelpack push registry.example.com/models/qwen3:0.6b\n  modelpack push localhost/qwen3:dev registry.example.com/models/qwen3:0.6b"
    )]
    Push(crate::commands::push::PushArgs),
    /// Download a model into the local store (or straight into a directory)
    #[command(
        after_help = "Examples:\n  modelpack pull registry.example.com/models/qwen3:0.6b --extract-dir /models/qwen3\n  modelpack pull registry.example.com/models/qwen3@sha256:… --extract-dir /models/qwen3 --extract-from-remote\n  modelpack pull registry.example.com/models/qwen3:0.6b --verify-key release.pub\n  sudo modelpack pull --containerd registry.example.com/models/qwen3:0.6b"
    )]
    Pull(crate::commands::pull::PullArgs),
    /// Download only the files matching patterns, straight into a directory
    #[command(
        after_help = "Examples:\n  modelpack fetch registry.example.com/models/qwen3:0.6b --output ./cfg --patterns '*.json' 'tokenizer*'"
    )]
    Fetch(crate::commands::fetch::FetchArgs),
    /// New model = a model plus (or replacing) one file; remote→remote without pulling weights
    #[command(
        after_help = "Examples:\n  modelpack attach chat_template.jinja -s registry.example.com/models/qwen3:0.6b -t registry.example.com/models/qwen3:0.6b-chat --output-remote"
    )]
    Attach(crate::commands::attach::AttachArgs),
    /// Pre-upload one file as a blob so a later `build --output-remote` skips it
    #[command(
        after_help = "Examples:\n  modelpack upload model-00001-of-00004.safetensors --repo registry.example.com/models/qwen3"
    )]
    Upload(crate::commands::upload::UploadArgs),
    /// Log in to a registry (stored like `docker login` stores it)
    #[command(
        after_help = "Examples:\n  modelpack login registry.example.com                    # prompts for username and password\n  echo \"$TOKEN\" | modelpack login ghcr.io -u me --password-stdin"
    )]
    Login(crate::commands::login::LoginArgs),
    /// Remove stored credentials for a registry
    #[command(after_help = "Examples:\n  modelpack logout registry.example.com")]
    Logout(crate::commands::login::LogoutArgs),
    /// Mount a model read-only at a directory: lazily from the store or its registry, or via containerd
    #[command(
        after_help = "Examples:\n  modelpack mount registry.example.com/models/qwen3:0.6b /mnt/qwen3   # lazily, every chunk verified\n  modelpack umount /mnt/qwen3"
    )]
    Mount(crate::commands::mount::MountArgs),
    /// Print a ready directory with a model's files as one JSON line (mounting it lazily)
    #[command(
        after_help = "Examples:\n  modelpack resolve registry.example.com/models/qwen3:0.6b   # {\"path\": …} of a ready directory"
    )]
    Resolve(crate::commands::resolve::ResolveArgs),
    /// Unmount a model mounted with `mount`
    #[command(after_help = "Examples:\n  modelpack umount /mnt/qwen3")]
    Umount(crate::commands::mount::UmountArgs),
    /// Sign a stored model (OpenSSF Model Signing, from its layer digests) and attach the signature
    #[command(
        after_help = "Examples:\n  modelpack sign registry.example.com/models/qwen3:0.6b --key release.pem --output model.sig\n  modelpack sign registry.example.com/models/qwen3:0.6b --attach model.sig   # a model_signing bundle"
    )]
    Sign(crate::commands::sign::SignArgs),
    /// Check a model's signature (or an extracted directory's) against a public key
    #[command(
        after_help = "Examples:\n  modelpack verify registry.example.com/models/qwen3:0.6b --key release.pub\n  modelpack verify --remote registry.example.com/models/qwen3:0.6b --key release.pub\n  modelpack verify --dir /models/qwen3 --signature model.sig --key release.pub"
    )]
    Verify(crate::commands::verify::VerifyArgs),
    /// List what is attached to a model: chunk indexes, signatures, SBOMs
    #[command(
        after_help = "Examples:\n  modelpack referrers --remote registry.example.com/models/qwen3:0.6b"
    )]
    Referrers(crate::commands::referrers::ReferrersArgs),
    /// Show the effective settings and where each came from
    Config {
        #[command(subcommand)]
        command: crate::commands::config::ConfigCommand,
    },
    /// Print a shell completion script: `source <(modelpack completion bash)`
    Completion {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print version information
    Version,
}
