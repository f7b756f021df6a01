//! The Docker CLI plugin protocol: argv[0] dispatch, the metadata command,
//! skipping docker's global flags, and cancellation through the
//! `DOCKER_CLI_PLUGIN_SOCKET`.
//!
//! One binary serves three names: `docker-modelpack` (plugin `modelpack`),
//! `docker-model` (the optional alias, plugin `model`) and anything else
//! (standalone, e.g. `modelpack`).

use std::ffi::OsString;
use std::path::PathBuf;

/// How we were invoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Name shown in help and hints: `docker modelpack`, `docker model` or `modelpack`.
    pub display_name: String,
    /// Plugin mode (run by the docker CLI).
    pub plugin: bool,
    /// Arguments for our own parser, starting with the display name.
    pub args: Vec<OsString>,
    /// docker's `--config DIR`, which relocates config.json (and so credentials).
    pub docker_config_dir: Option<PathBuf>,
    /// docker's `-D`/`--debug` or `-l debug`.
    pub debug: bool,
    /// `docker-cli-plugin-metadata` was requested.
    pub metadata: bool,
}

/// What `docker-modelpack docker-cli-plugin-metadata` prints. Static: the CLI
/// runs it for every `docker --help`, so it must be instant and side-effect free.
pub fn metadata_json() -> String {
    format!(
        r#"{{"SchemaVersion":"0.1.0","Vendor":"modelpack","Version":"{}","ShortDescription":"Build, push, pull and mount CNCF ModelPack model artifacts","URL":"https://github.com/modelpack/modelpack-rs"}}"#,
        env!("CARGO_PKG_VERSION")
    )
}

/// docker global options that take a value.
const VALUE_FLAGS: &[&str] = &[
    "--config",
    "-c",
    "--context",
    "-H",
    "--host",
    "-l",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
];
/// docker global options without a value.
const BOOL_FLAGS: &[&str] = &["-D", "--debug", "--tls", "--tlsverify"];

pub fn parse_invocation(argv: Vec<OsString>, plugin_env: bool) -> Invocation {
    let argv0 = argv.first().map(PathBuf::from).unwrap_or_default();
    let base = argv0
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let plugin_name = match base.as_str() {
        "docker-modelpack" => Some("modelpack"),
        "docker-model" => Some("model"),
        _ => None,
    };
    let rest: Vec<OsString> = argv.into_iter().skip(1).collect();
    if plugin_name.is_some()
        && rest
            .first()
            .map(|a| a == "docker-cli-plugin-metadata")
            .unwrap_or(false)
    {
        return Invocation {
            display_name: String::new(),
            plugin: true,
            args: Vec::new(),
            docker_config_dir: None,
            debug: false,
            metadata: true,
        };
    }
    let Some(name) = plugin_name else {
        return Invocation {
            display_name: base.clone(),
            plugin: false,
            args: std::iter::once(OsString::from(base)).chain(rest).collect(),
            docker_config_dir: None,
            debug: false,
            metadata: false,
        };
    };
    let plugin = plugin_env;
    let mut docker_config_dir = None;
    let mut debug = false;
    let mut i = 0;
    // docker passes its own global flags before our name; consume them.
    while i < rest.len() {
        let a = rest[i].to_string_lossy().to_string();
        if a == name {
            i += 1;
            break;
        }
        if a == "help" && rest.get(i + 1).map(|n| n == name).unwrap_or(false) {
            // `docker help modelpack` → `modelpack --help`
            let display = if plugin {
                format!("docker {name}")
            } else {
                base.clone()
            };
            return Invocation {
                display_name: display.clone(),
                plugin,
                args: vec![display.into(), "--help".into()],
                docker_config_dir,
                debug,
                metadata: false,
            };
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if VALUE_FLAGS.contains(&flag.as_str()) {
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    rest.get(i)
                        .map(|v| v.to_string_lossy().to_string())
                        .unwrap_or_default()
                }
            };
            match flag.as_str() {
                "--config" => docker_config_dir = Some(PathBuf::from(value)),
                "-l" | "--log-level" => debug |= value == "debug",
                _ => {}
            }
            i += 1;
        } else if BOOL_FLAGS.contains(&flag.as_str()) {
            debug |= flag == "-D" || flag == "--debug";
            i += 1;
        } else {
            // Not a docker flag and not our name: run directly (`docker-modelpack build …`).
            break;
        }
    }
    let display_name = if plugin {
        format!("docker {name}")
    } else {
        base
    };
    Invocation {
        args: std::iter::once(OsString::from(display_name.clone()))
            .chain(rest.into_iter().skip(i))
            .collect(),
        display_name,
        plugin,
        docker_config_dir,
        debug,
        metadata: false,
    }
}

/// The docker CLI's plugin search path, in its order (cli-plugins/manager/manager.go).
fn plugin_dirs(config_dir: &std::path::Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(bytes) = std::fs::read(config_dir.join("config.json"))
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
        && let Some(extra) = v.get("cliPluginsExtraDirs").and_then(|x| x.as_array())
    {
        dirs.extend(extra.iter().filter_map(|d| d.as_str()).map(PathBuf::from));
    }
    dirs.push(config_dir.join("cli-plugins"));
    for d in [
        "/usr/local/lib",
        "/usr/local/libexec",
        "/usr/lib",
        "/usr/libexec",
    ] {
        dirs.push(PathBuf::from(d).join("docker/cli-plugins"));
    }
    dirs
}

/// When we run as the `docker-model` alias, another `docker-model` (Docker Model
/// Runner's, installed later by a package) may now be shadowed by us: say so.
pub fn shadowed_docker_model(
    argv0: &std::path::Path,
    config_dir: &std::path::Path,
) -> Option<PathBuf> {
    let me = std::fs::canonicalize(argv0).ok()?;
    plugin_dirs(config_dir)
        .into_iter()
        .map(|d| d.join("docker-model"))
        .find(|p| p.exists() && std::fs::canonicalize(p).ok().as_ref() != Some(&me))
}

/// Connects to the docker CLI's socket; when it closes (EOF), the user asked to cancel.
/// Returns immediately when not running under docker.
pub async fn wait_for_cli_cancel() {
    let Some(addr) = std::env::var_os("DOCKER_CLI_PLUGIN_SOCKET") else {
        return std::future::pending().await;
    };
    let addr = addr.to_string_lossy().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // A detached thread: the runtime must not wait for it on exit (the CLI
    // keeps the socket open until we exit).
    std::thread::spawn(move || {
        use std::io::Read;
        let Ok(mut stream) = connect(&addr) else {
            return;
        };
        let mut buf = [0u8; 64];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(());
    });
    if rx.await.is_err() {
        // Could not connect: no cancellation channel.
        std::future::pending::<()>().await;
    }
}

fn connect(addr: &str) -> std::io::Result<std::os::unix::net::UnixStream> {
    if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        std::os::unix::net::UnixStream::connect_addr(&sa)
    } else {
        std::os::unix::net::UnixStream::connect(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(args: &[&str], plugin: bool) -> Invocation {
        parse_invocation(args.iter().map(OsString::from).collect(), plugin)
    }

    fn strs(i: &Invocation) -> Vec<String> {
        i.args
            .iter()
            .map(|a| a.to_string_lossy().to_string())
            .collect()
    }

    #[test]
    fn plugin_mode_strips_docker_global_flags() {
        let i = inv(
            &[
                "/x/docker-modelpack",
                "--config",
                "/cfg",
                "-D",
                "-H",
                "unix:///x",
                "--context=default",
                "modelpack",
                "ls",
                "--json",
            ],
            true,
        );
        assert!(i.plugin && i.debug);
        assert_eq!(i.docker_config_dir, Some(PathBuf::from("/cfg")));
        assert_eq!(strs(&i), ["docker modelpack", "ls", "--json"]);
    }

    #[test]
    fn metadata_and_help_forms() {
        assert!(inv(&["docker-modelpack", "docker-cli-plugin-metadata"], true).metadata);
        let h = inv(&["docker-modelpack", "help", "modelpack"], true);
        assert_eq!(strs(&h), ["docker modelpack", "--help"]);
        let m: serde_json::Value = serde_json::from_str(&metadata_json()).unwrap();
        assert_eq!(m["SchemaVersion"], "0.1.0");
        assert_eq!(m["Vendor"], "modelpack");
    }

    #[test]
    fn finds_a_shadowed_docker_model_but_not_ourselves() {
        let t = tempfile::tempdir().unwrap();
        let me = t.path().join("docker-modelpack");
        std::fs::write(&me, b"x").unwrap();
        let cfg = t.path().join("cfg");
        std::fs::create_dir_all(cfg.join("cli-plugins")).unwrap();
        std::os::unix::fs::symlink(&me, cfg.join("cli-plugins/docker-model")).unwrap();
        assert_eq!(
            shadowed_docker_model(&cfg.join("cli-plugins/docker-model"), &cfg),
            None
        );
        let extra = t.path().join("extra");
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(extra.join("docker-model"), b"dmr").unwrap();
        std::fs::write(
            cfg.join("config.json"),
            format!(r#"{{"cliPluginsExtraDirs":["{}"]}}"#, extra.display()),
        )
        .unwrap();
        assert_eq!(
            shadowed_docker_model(&cfg.join("cli-plugins/docker-model"), &cfg),
            Some(extra.join("docker-model"))
        );
    }

    #[test]
    fn standalone_and_alias_names() {
        let s = inv(&["/usr/bin/modelpack", "build", "-t", "x", "."], false);
        assert!(!s.plugin);
        assert_eq!(strs(&s), ["modelpack", "build", "-t", "x", "."]);
        let a = inv(&["docker-model", "-l", "debug", "model", "ls"], true);
        assert_eq!(strs(&a), ["docker model", "ls"]);
        assert!(a.debug);
        let direct = inv(&["./docker-modelpack", "ls"], false);
        assert_eq!(strs(&direct), ["docker-modelpack", "ls"]);
    }
}
