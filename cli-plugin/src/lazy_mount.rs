//! `mount REF DIR` without containerd, and `resolve REF`: a model shown
//! read-only through FUSE (`modelpack-fs`), from the local store or straight
//! from its registry. Layers with a chunk index the trust policy accepts are
//! served chunk by chunk (each verified before a byte is returned) and
//! prefetched in the background; the others are fetched whole first.
//!
//! The view is served by a detached copy of this process (same arguments,
//! `SERVE_ENV` naming the directory), so `mount` returns as soon as the
//! view is up and `umount DIR` ends it. The child reports readiness as one
//! JSON line on its stdout; its log goes to `<store>/mounts/<id>.log`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use modelpack_common::Reference;
use modelpack_common::cas::BlobSource;
use modelpack_common::digest::Digest;
use modelpack_common::lazy::{
    Attachable, LazyPolicy, fetch_whole, open_local, open_remembered, open_remote,
};
use modelpack_common::registry::{RegistryBlob, RegistryClient};
use modelpack_common::store::Store;
use modelpack_fs::{FsOptions, ModelFs};
use serde::{Deserialize, Serialize};

use crate::commands::Ctx;
use crate::commands::remote::RegistryArgs;

/// Set in the serving child: the directory to serve the view at.
const SERVE_ENV: &str = "_MODELPACK_SERVE_DIR";

#[derive(Debug, Clone, Args)]
pub struct LazyArgs {
    /// Serve from this process until unmounted, instead of from a background process
    #[arg(long)]
    pub foreground: bool,
    /// Do not fetch the rest of the model in the background once mounted
    #[arg(long)]
    pub no_prefetch: bool,
    /// Most bytes per second the background prefetch may fetch (e.g. 100MiB; 0 = unlimited)
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = crate::commands::parse_bytes)]
    pub prefetch_limit: u64,
    /// Seconds a read waits for a missing chunk before it fails with EIO
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub read_timeout: u64,
    /// Also serve through chunk indexes linked only by a referrer (not bound to the model digest)
    #[arg(long)]
    pub allow_unbound_index: bool,
    /// Let other users read the mount (root, or `user_allow_other` in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,
}

impl LazyArgs {
    fn policy(&self) -> LazyPolicy {
        LazyPolicy {
            allow_unbound: self.allow_unbound_index,
        }
    }
}

/// What a mounted view reports (the `--json` object and the child's ready line).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountReport {
    pub reference: String,
    pub digest: String,
    pub path: PathBuf,
    /// `config.format` of the model (safetensors, gguf, …), when it says.
    pub format: Option<String>,
    pub layers: usize,
    pub lazy_layers: usize,
    pub files: usize,
    pub pid: u32,
}

/// The model and what serves its missing bytes.
pub struct Opened {
    pub store: Store,
    pub model: Attachable,
    pub client: RegistryClient,
}

/// Opens `reference` from the store, else from its registry.
pub async fn open(
    ctx: &Ctx,
    registry: &RegistryArgs,
    lazy: &LazyArgs,
    reference: &Reference,
) -> Result<Opened> {
    let store = ctx.store()?;
    let client = registry.client(ctx)?;
    let model = match open_local(&store, reference, lazy.policy()) {
        Ok(m) => m,
        Err(modelpack_common::Error::NotFound { .. }) => {
            match open_remote(&client, &store, reference, lazy.policy()).await {
                Ok(m) => m,
                // Unreachable registry: remount what an earlier mount resolved.
                Err(e @ modelpack_common::Error::Registry { .. }) => {
                    match open_remembered(&store, reference, lazy.policy()) {
                        Some(m) => {
                            tracing::warn!(
                                "{e}; mounting {} as last resolved ({})",
                                reference,
                                m.descriptor.digest
                            );
                            m
                        }
                        None => {
                            return Err(anyhow::Error::new(e)
                                .context(format!("cannot open {reference} from its registry")));
                        }
                    }
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot open {reference} from its registry")));
                }
            }
        }
        Err(e) => return Err(e.into()),
    };
    for w in &model.warnings {
        tracing::warn!("{w}");
    }
    Ok(Opened {
        store,
        model,
        client,
    })
}

fn source_for(
    client: &RegistryClient,
    reference: &Reference,
) -> impl Fn(&modelpack_common::manifest::Descriptor) -> Arc<dyn BlobSource> + use<> {
    let client = client.clone();
    let reference = reference.clone();
    move |d| {
        Arc::new(RegistryBlob::new(
            client.clone(),
            reference.clone(),
            d.digest.clone(),
            d.size,
        ))
    }
}

/// The directory `resolve` serves a model at: one per manifest digest.
pub fn resolve_dir(store: &Store, digest: &Digest) -> PathBuf {
    store.root().join("mounts").join(digest.hex())
}

/// Is `dir` the mount point of a view this tool serves?
pub fn is_lazy_mount(dir: &Path) -> bool {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            return false;
        };
        // fuser mounts as type `fuse` (or `fuse.modelpack` through
        // fusermount) with our fsname `modelpack:<ref>` as the source.
        f.get(4).map(|m| unescape_mountinfo(m)) == Some(dir.display().to_string())
            && f.get(sep + 1).is_some_and(|t| t.starts_with("fuse"))
            && f.get(sep + 2).is_some_and(|s| s.starts_with("modelpack"))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Is this process the detached server of a view (its stdout belongs to the
/// parent that waits for the ready line)?
pub fn is_serving_child() -> bool {
    std::env::var_os(SERVE_ENV).is_some()
}

/// `mount`/`resolve` in the foreground, or by starting the serving child.
pub async fn mount(
    ctx: &Ctx,
    registry: &RegistryArgs,
    lazy: &LazyArgs,
    reference: &Reference,
    dir: &Path,
) -> Result<MountReport> {
    if lazy.foreground || is_serving_child() {
        let dir = std::env::var_os(SERVE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.to_path_buf());
        let opened = open(ctx, registry, lazy, reference).await?;
        return serve(ctx, lazy, opened, &dir).await;
    }
    spawn_server(ctx, dir)
}

/// `<store>/mounts/<id>.<ext>`: the serving process's log and pid file for `dir`.
fn server_file(ctx: &Ctx, dir: &Path, ext: &str) -> PathBuf {
    ctx.storage_dir.join("mounts").join(format!(
        "{}.{ext}",
        Digest::of(dir.display().to_string().as_bytes()).short()
    ))
}

/// After the view at `dir` was unmounted: waits (up to 10 s) for its serving
/// process to exit, so its partial blobs are free for the next mount.
pub fn wait_for_server(ctx: &Ctx, dir: &Path) {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return;
    };
    let pid_file = server_file(ctx, &dir, "pid");
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let pid = nix::unistd::Pid::from_raw(pid);
    while nix::sys::signal::kill(pid, None).is_ok() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&pid_file);
}

/// Starts a detached copy of this process that serves `dir`, and waits for
/// its ready line (or its failure, shown from its log).
fn spawn_server(ctx: &Ctx, dir: &Path) -> Result<MountReport> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    if is_lazy_mount(&dir) {
        bail!(
            "{} is already a modelpack mount\nhint: run `{} umount {}` first",
            dir.display(),
            ctx.display_name,
            dir.display()
        );
    }
    let logs = ctx.storage_dir.join("mounts");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let log_path = server_file(ctx, &dir, "log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(SERVE_ENV, &dir)
        // The view outlives the docker CLI that started it.
        .env_remove("DOCKER_CLI_PLUGIN_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start the serving process")?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    BufReader::new(stdout).read_line(&mut line)?;
    if let Ok(m) = serde_json::from_str::<MountReport>(line.trim()) {
        return Ok(m);
    }
    let status = child.wait()?;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let msg = log
        .lines()
        .filter(|l| l.starts_with("error") || l.starts_with("  caused by"))
        .collect::<Vec<_>>()
        .join("\n");
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg).to_string();
    if msg.is_empty() {
        bail!(
            "the serving process exited ({status}) before the view was up; see {}",
            log_path.display()
        );
    }
    Err(anyhow!("{msg}"))
}

/// Fetches what must be whole, mounts the view, reports readiness, then
/// serves (and prefetches) until the view is unmounted.
async fn serve(ctx: &Ctx, lazy: &LazyArgs, opened: Opened, dir: &Path) -> Result<MountReport> {
    modelpack_fs::bound_allocator_cache();
    let Opened {
        store,
        mut model,
        client,
    } = opened;
    let cas = store.cas().clone();
    let source = source_for(&client, &model.reference);
    let fetch: Vec<_> = model.layers_to_fetch().cloned().collect();
    for p in &fetch {
        let d = &p.layer.descriptor;
        let _lease = store.lease()?;
        fetch_whole(&cas, source(d).as_ref())
            .await
            .with_context(|| format!("cannot fetch layer {} ({})", p.layer.filepath, d.digest))?;
    }
    if !fetch.is_empty() {
        model.replan(&store, lazy.policy())?;
    }
    let files = modelpack_fs::attach::files_for(&model.plans, &cas, &source)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    let mtime = model
        .config
        .descriptor
        .created_at
        .as_deref()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let opts = FsOptions {
        read_timeout: Duration::from_secs(lazy.read_timeout.max(1)),
        allow_other: lazy.allow_other,
        fsname: format!("modelpack:{}", model.reference),
        ..FsOptions::default()
    };
    let fs = ModelFs::new(
        files.clone(),
        mtime,
        opts,
        tokio::runtime::Handle::current(),
    )
    .with_context(|| format!("{} cannot be shown as a directory tree", model.reference))?;
    let mounted_fs = modelpack_fs::mount(fs, &dir).map_err(|e| {
        anyhow!(
            "cannot mount {} at {}: {e}\nhint: FUSE needs /dev/fuse and root (or fusermount3); `{} extract` works everywhere",
            model.reference,
            dir.display(),
            ctx.display_name
        )
    })?;
    let report = MountReport {
        reference: model.reference.to_string(),
        digest: model.descriptor.digest.to_string(),
        path: dir.clone(),
        format: model.config.config.format.clone(),
        layers: model.plans.len(),
        lazy_layers: model.lazy_layers(),
        files: files.len(),
        pid: std::process::id(),
    };
    if is_serving_child() {
        // Detach from the terminal and tell the parent the view is up.
        let _ = nix::unistd::setsid();
        let _ = std::fs::write(server_file(ctx, &dir, "pid"), report.pid.to_string());
        ctx.out.data(serde_json::to_string(&report)?);
    } else {
        ctx.out.status(format!(
            "serving {} at {} ({} of {} layers lazily); unmount with `{} umount {}`",
            report.reference,
            dir.display(),
            report.lazy_layers,
            report.layers,
            ctx.display_name,
            dir.display()
        ));
    }
    let prefetch = if lazy.no_prefetch || report.lazy_layers == 0 {
        None
    } else {
        let files = files.clone();
        let store = store.clone();
        let model = model.clone();
        let prefetch_opts = modelpack_fs::Prefetch {
            bytes_per_sec: lazy.prefetch_limit,
            ..modelpack_fs::Prefetch::default()
        };
        Some(tokio::spawn(async move {
            let total = modelpack_fs::attach::progress(&files).1;
            let done = modelpack_fs::prefetch_until_complete(files, prefetch_opts).await;
            tracing::info!("prefetch: {done} of {total} lazily served blobs complete");
            if done == total {
                // Every blob is in the store now: the model is an ordinary stored model.
                let r = &model.reference;
                let recorded = if r.tag.is_some() || r.digest.is_none() {
                    store.tag(r, &model.descriptor)
                } else {
                    store.record_untagged(r, &model.descriptor)
                };
                if let Err(e) = recorded {
                    tracing::warn!("cannot record {} in the store: {e}", model.reference);
                }
            }
        }))
    };
    while is_lazy_mount(&dir) {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if let Some(p) = prefetch {
        p.abort();
    }
    let stats = &mounted_fs.stats;
    let f = modelpack_fs::attach::fetch_summary(&files);
    tracing::info!(
        "unmounted {}: {} reads, {} bytes served, {} read errors; {} fetches ({} bytes, p50 {:?} ms, p99 {:?} ms), {} chunks refused",
        dir.display(),
        stats.reads.load(std::sync::atomic::Ordering::Relaxed),
        stats
            .bytes_served
            .load(std::sync::atomic::Ordering::Relaxed),
        stats.read_errors.load(std::sync::atomic::Ordering::Relaxed),
        f.fetches,
        f.bytes,
        f.p50_ms,
        f.p99_ms,
        f.refused
    );
    drop(mounted_fs);
    Ok(report)
}
