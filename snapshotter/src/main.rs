//! `modelpack-snapshotter`: a containerd proxy snapshotter that serves ordinary
//! image layers like the overlayfs snapshotter and attaches ModelPack models
//! (fetched, verified, deduplicated per node). Runs in the foreground; SIGTERM
//! or SIGINT stops it cleanly and removes the socket.

mod authority;
mod config;
mod cri;
mod csi;
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
pub use modelpack_snapshotter::csi_proto;

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
    /// Also serve the CSI node service (Kubernetes) on this unix socket
    /// (`unix://` prefix accepted), e.g. /var/lib/kubelet/plugins/modelpack.csi.modelpack.dev/csi.sock
    #[arg(long, value_name = "PATH")]
    csi_address: Option<String>,
    /// The node's name for NodeGetInfo [default: $NODE_NAME, else the hostname]
    #[arg(long)]
    node_id: Option<String>,
    /// CSI driver name [default: modelpack.csi.modelpack.dev]
    #[arg(long)]
    csi_driver_name: Option<String>,
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
    if let Some(n) = cfg.chunk_size {
        // Accepted so existing config files still load; eager layers are
        // hashed once and lazy ones use the model's own chunk index.
        modelpack_common::chunk::check_chunk_size(n).context("chunk_size in the config file")?;
        tracing::warn!(
            "chunk_size in the config file is no longer used (eager layers are not re-chunked on the node)"
        );
    }
    let lazy = cfg
        .lazy_options(&root)
        .context("the lazy attach settings")?;
    let csi_address = args
        .csi_address
        .map(|a| config::strip_unix_scheme(&a))
        .or(cfg.csi.address.clone());
    let csi = csi_address.map(|address| {
        let node_id = args
            .node_id
            .or(cfg.csi.node_id.clone())
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "localhost".into())
            });
        let driver_name = args
            .csi_driver_name
            .or(cfg.csi.driver_name.clone())
            .unwrap_or_else(|| csi::DEFAULT_DRIVER_NAME.into());
        (
            address,
            csi::CsiOptions {
                driver_name,
                node_id,
            },
        )
    });
    let policy = modelpack_common::signing::policy::NodePolicy::load(&cfg.signing)
        .context("the [signing] policy in the config file")?
        .map(Arc::new);
    runtime.block_on(serve(Node {
        root,
        address,
        concurrency: cfg.concurrency.unwrap_or(4),
        reg: cfg.registry,
        lazy_opts: lazy,
        csi_opts: csi,
        policy,
    }))
}

/// Everything the node agent serves with, resolved from flags and the config file.
struct Node {
    root: PathBuf,
    address: PathBuf,
    concurrency: usize,
    reg: config::RegistryConfig,
    lazy_opts: lazy::LazyOptions,
    csi_opts: Option<(PathBuf, csi::CsiOptions)>,
    policy: Option<Arc<modelpack_common::signing::policy::NodePolicy>>,
}

/// Listens on a unix socket (replacing a stale one), every connection
/// through the authority bridge (see `authority.rs`).
fn listen(
    address: &std::path::Path,
) -> Result<impl futures::Stream<Item = std::io::Result<authority::Bridged>> + use<>> {
    use futures::StreamExt;
    if let Some(dir) = address.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(address);
    let listener = tokio::net::UnixListener::bind(address)
        .with_context(|| format!("cannot listen on {}", address.display()))?;
    Ok(tokio_stream::wrappers::UnixListenerStream::new(listener).map(|s| s.map(authority::bridge)))
}

async fn serve(node: Node) -> Result<()> {
    let Node {
        root,
        address,
        concurrency,
        reg,
        lazy_opts,
        csi_opts,
        policy,
    } = node;
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let snaps = Arc::new(
        snapshots::Snapshots::open(&root)
            .with_context(|| format!("cannot open the snapshotter state in {}", root.display()))?,
    );
    let creds = CredentialStore::new(CredentialOptions {
        docker_config_dir: reg.docker_config_dir.clone(),
        ..Default::default()
    });
    let transport = TransportOptions {
        plain_http: reg.plain_http,
        insecure: reg.insecure,
        hosts_dir: reg.hosts_dir.clone(),
        concurrency,
        ..Default::default()
    };
    let client = RegistryClient::new(transport.clone(), Arc::new(creds))?;
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
    // The CSI volumes share the node store and the lazy views' sparse blobs
    // (one writer per blob); with lazy attach off they still need a FUSE server.
    let csi = match csi_opts {
        None => None,
        Some((csi_address, opts)) => {
            let views = lazy.clone().unwrap_or_else(|| {
                Arc::new(lazy::LazyViews::new(
                    lazy::LazyOptions {
                        enable: false,
                        ..Default::default()
                    },
                    snaps.cas.clone(),
                    client.clone(),
                    tokio::runtime::Handle::current(),
                ))
            });
            let volumes = Arc::new(
                csi::Volumes::open(
                    opts,
                    &root,
                    snaps.clone(),
                    views,
                    transport.clone(),
                    client.clone(),
                    policy.clone(),
                )
                .map_err(|e| anyhow::anyhow!("cannot open the CSI volumes: {e:?}"))?,
            );
            let _ = snaps
                .blob_users
                .set(volumes.clone() as Arc<dyn snapshots::BlobUsers>);
            let served = volumes.restore().await;
            if served > 0 {
                tracing::info!("{served} CSI volumes served again");
            }
            Some((csi_address, volumes))
        }
    };
    // GC that `Snapshots::open` left for later (CSI's blobs are now named).
    {
        let s2 = snaps.clone();
        tokio::task::spawn_blocking(move || s2.cleanup()).await??;
    }
    let fetcher = Arc::new(model::ModelFetcher {
        client,
        lazy,
        cri: Default::default(),
        chains: Default::default(),
        blobs: Default::default(),
        prefetching: Default::default(),
        policy,
        manifests: Default::default(),
    });
    let incoming = listen(&address)?;
    tracing::info!(root = %root.display(), address = %address.display(), "modelpack-snapshotter serving");
    let svc = service::SnapshotsServer::new(service::Service { snaps, fetcher });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let csi_task = match &csi {
        None => None,
        Some((csi_address, volumes)) => {
            let incoming = listen(csi_address)?;
            tracing::info!(address = %csi_address.display(), driver = %volumes.opts.driver_name, node = %volumes.opts.node_id, "CSI node service serving");
            let svc = csi::CsiService {
                volumes: volumes.clone(),
            };
            let rx = stop_rx.clone();
            Some(tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(csi::identity_server::IdentityServer::new(svc.clone()))
                    .add_service(csi::node_server::NodeServer::new(svc))
                    .serve_with_incoming_shutdown(incoming, shutdown(rx)),
            ))
        }
    };
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let server = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown(stop_rx.clone()));
    // Graceful shutdown waits for clients to hang up; a client that keeps an
    // idle connection (containerd's proxy client does) must not hold the
    // node agent for ever: after the signal, 3 s, then we stop regardless.
    let deadline = async {
        shutdown(stop_rx.clone()).await;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    };
    tokio::select! {
        r = server => r?,
        _ = deadline => tracing::info!("clients still connected 3 s after the signal; stopping anyway"),
    }
    let _ = std::fs::remove_file(&address);
    // Kubelet keeps its CSI connection open too: graceful for at most 3 s
    // more (the CSI server drained meanwhile), then stop regardless.
    if let Some(mut t) = csi_task {
        let grace = std::time::Duration::from_secs(3);
        if tokio::time::timeout(grace, &mut t).await.is_err() {
            tracing::info!("CSI clients still connected 3 s after the signal; stopping anyway");
            t.abort();
        }
    }
    if let Some((csi_address, _)) = &csi {
        let _ = std::fs::remove_file(csi_address);
    }
    Ok(())
}
