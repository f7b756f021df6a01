//! `modelpack-snapshotter`: a containerd proxy snapshotter that serves ordinary
//! image layers like the overlayfs snapshotter and attaches ModelPack models
//! (fetched, verified, deduplicated per node). Runs in the foreground; SIGTERM
//! or SIGINT stops it cleanly and removes the socket.

mod config;
mod cri;
mod error;
mod filters;
mod lazy;
mod meta;
mod model;
mod service;
mod snapshots;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use modelpack_common::credentials::{CredentialOptions, CredentialStore};
use modelpack_common::registry::{RegistryClient, TransportOptions};

#[derive(Debug, Parser)]
#[command(version, about = "containerd proxy snapshotter for ModelPack models")]
struct Args {
    /// TOML config file (flags override it)
    #[arg(long)]
    config: Option<PathBuf>,
    /// State and data directory [default: /var/lib/modelpack-snapshotter]
    #[arg(long)]
    root: Option<PathBuf>,
    /// gRPC unix socket [default: /run/modelpack-snapshotter/snapshotter.sock]
    #[arg(long)]
    address: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides
    #[arg(long, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Print the running snapshotter's lazy views: bytes served, chunks present, read errors (JSON)
    Stats,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cfg = config::Config::load(args.config.as_deref())?;
    let root = args
        .root
        .or(cfg.root.clone())
        .unwrap_or_else(|| PathBuf::from("/var/lib/modelpack-snapshotter"));
    let address = args
        .address
        .or(cfg.address.clone())
        .unwrap_or_else(|| PathBuf::from("/run/modelpack-snapshotter/snapshotter.sock"));
    if let Some(Cmd::Stats) = args.command {
        let p = lazy::stats_path(&root);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "cannot read {} (is modelpack-snapshotter running with --root {}?)",
                p.display(),
                root.display()
            )
        })?;
        println!("{}", text.trim_end());
        return Ok(());
    }
    modelpack_fs::bound_allocator_cache();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let chunk_size = modelpack_common::chunk::check_chunk_size(
        cfg.chunk_size
            .unwrap_or(modelpack_common::chunk::DEFAULT_CHUNK_SIZE),
    )
    .context("chunk_size in the config file")?;
    let lazy = cfg
        .lazy_options(&root)
        .context("the lazy attach settings")?;
    runtime.block_on(serve(
        root,
        address,
        cfg.concurrency.unwrap_or(4),
        chunk_size,
        cfg.registry,
        lazy,
    ))
}

async fn serve(
    root: PathBuf,
    address: PathBuf,
    concurrency: usize,
    chunk_size: u64,
    reg: config::RegistryConfig,
    lazy_opts: lazy::LazyOptions,
) -> Result<()> {
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let snaps = Arc::new(
        snapshots::Snapshots::open(&root)
            .with_context(|| format!("cannot open the snapshotter state in {}", root.display()))?,
    );
    let creds = CredentialStore::new(CredentialOptions {
        docker_config_dir: reg.docker_config_dir.clone(),
        ..Default::default()
    });
    let client = RegistryClient::new(
        TransportOptions {
            plain_http: reg.plain_http,
            insecure: reg.insecure,
            hosts_dir: reg.hosts_dir.clone(),
            concurrency,
            ..Default::default()
        },
        Arc::new(creds),
    )?;
    let lazy = lazy_opts.enable.then(|| {
        Arc::new(lazy::LazyViews::new(
            lazy_opts,
            snaps.cas.clone(),
            client.clone(),
            tokio::runtime::Handle::current(),
        ))
    });
    if let Some(l) = &lazy {
        let _ = snaps.lazy.set(l.clone());
        tokio::spawn(lazy::publish_stats(l.clone(), root.clone()));
    }
    // Views of lazy layers survive us only as dead mounts: serve them again.
    let s2 = snaps.clone();
    let restored = tokio::task::spawn_blocking(move || s2.restore_lazy_views()).await??;
    if restored > 0 {
        tracing::info!("{restored} lazy views served again");
    }
    let fetcher = Arc::new(model::ModelFetcher {
        client,
        chunk_size,
        lazy,
        cri: Default::default(),
        lock: tokio::sync::Mutex::new(()),
    });
    if let Some(dir) = address.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&address);
    let listener = tokio::net::UnixListener::bind(&address)
        .with_context(|| format!("cannot listen on {}", address.display()))?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tracing::info!(root = %root.display(), address = %address.display(), "modelpack-snapshotter serving");
    let svc = service::SnapshotsServer::new(service::Service { snaps, fetcher });
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
    };
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    let _ = std::fs::remove_file(&address);
    Ok(())
}
