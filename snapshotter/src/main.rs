//! `modelpack-snapshotter`: a containerd proxy snapshotter that serves ordinary
//! image layers like the overlayfs snapshotter and attaches ModelPack models
//! (fetched, verified, deduplicated per node). Runs in the foreground; SIGTERM
//! or SIGINT stops it cleanly and removes the socket.

mod error;
mod filters;
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
use serde::Deserialize;

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    root: Option<PathBuf>,
    address: Option<PathBuf>,
    concurrency: Option<usize>,
    chunk_size: Option<u64>,
    #[serde(default)]
    registry: RegistryConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryConfig {
    /// containerd certs.d layout (mirrors, CA, plain-http per host).
    hosts_dir: Option<PathBuf>,
    /// Where the node's docker config.json lives; credentials are read from there, never from labels.
    docker_config_dir: Option<PathBuf>,
    #[serde(default)]
    plain_http: bool,
    #[serde(default)]
    insecure: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cfg: Config = match &args.config {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        )
        .with_context(|| format!("invalid config {}", p.display()))?,
        None => Config::default(),
    };
    let root = args
        .root
        .or(cfg.root)
        .unwrap_or_else(|| PathBuf::from("/var/lib/modelpack-snapshotter"));
    let address = args
        .address
        .or(cfg.address)
        .unwrap_or_else(|| PathBuf::from("/run/modelpack-snapshotter/snapshotter.sock"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(
        root,
        address,
        cfg.concurrency.unwrap_or(4),
        modelpack_common::chunk::check_chunk_size(
            cfg.chunk_size
                .unwrap_or(modelpack_common::chunk::DEFAULT_CHUNK_SIZE),
        )
        .context("chunk_size in the config file")?,
        cfg.registry,
    ))
}

async fn serve(
    root: PathBuf,
    address: PathBuf,
    concurrency: usize,
    chunk_size: u64,
    reg: RegistryConfig,
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
    let fetcher = Arc::new(model::ModelFetcher {
        client,
        chunk_size,
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
