//! `docker-modelpack`: the Docker CLI plugin and standalone `modelpack` CLI.
//! Thin: parses arguments, sets up logging and cancellation, and hands each
//! verb to its module in `commands/`. All logic lives in `modelpack-common`.

mod cli;
mod commands;
mod containerd;
mod lazy_mount;
mod output;
mod plugin;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    // Piped into `head`, exit quietly like other CLI tools. SIGPIPE itself stays ignored
    // (Rust's default): a registry dropping a connection must be an error we retry, not a signal.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let inv = plugin::parse_invocation(
        std::env::args_os().collect(),
        std::env::var_os("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND").is_some(),
    );
    if inv.metadata {
        println!("{}", plugin::metadata_json());
        return ExitCode::SUCCESS;
    }
    if inv.display_name == "docker model" {
        let argv0 = std::env::args_os()
            .next()
            .map(std::path::PathBuf::from)
            .unwrap_or_default();
        let config_dir = inv
            .docker_config_dir
            .clone()
            .or_else(|| std::env::var_os("DOCKER_CONFIG").map(Into::into))
            .unwrap_or_else(|| {
                std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".docker")
            });
        if let Some(other) = plugin::shadowed_docker_model(&argv0, &config_dir) {
            eprintln!(
                "warning: this `docker model` is modelpack, and another docker-model plugin (Docker Model Runner?) is installed at {}: the docker CLI runs only the first one on its plugin path\nhint: use `docker modelpack …` and remove the docker-model alias",
                other.display()
            );
        }
    }
    let display_name: &'static str = Box::leak(inv.display_name.clone().into_boxed_str());
    let matches = match cli::Cli::command()
        .name(display_name)
        .bin_name(display_name)
        .try_get_matches_from(&inv.args)
    {
        Ok(m) => m,
        Err(e) => e.exit(),
    };
    let args = match cli::Cli::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    init_tracing(args.global.verbose, inv.debug);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = commands::Ctx::new(&args.global, &inv);
    let json = args.global.json;
    let storage_flag = args.global.storage_dir.is_some();
    let result = runtime.block_on(async {
        tokio::select! {
            r = commands::run(args.command, ctx, storage_flag) => r,
            _ = cancelled() => Err(anyhow::Error::new(modelpack_common::Error::Cancelled)),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            if json {
                print_json_error(&e);
            } else {
                print_error(&e);
            }
            if matches!(
                e.downcast_ref::<modelpack_common::Error>(),
                Some(modelpack_common::Error::Cancelled)
            ) {
                // Partial downloads and upload sessions are kept for the next attempt to resume.
                std::process::exit(130);
            }
            ExitCode::FAILURE
        }
    }
}

/// SIGINT, SIGTERM, or EOF on the docker CLI's plugin socket.
async fn cancelled() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = plugin::wait_for_cli_cancel() => {}
    }
}

/// Under `--json`: `{"error": {"message", "causes", "hint"}}` on stderr (the
/// same exit code), so a pipeline parses failures like results.
fn print_json_error(e: &anyhow::Error) {
    let full = e.to_string();
    let (message, hint) = match full.split_once("\nhint: ") {
        Some((m, h)) => (m.to_string(), Some(h.to_string())),
        None => (full.clone(), None),
    };
    let causes: Vec<String> = e
        .chain()
        .skip(1)
        .map(|c| c.to_string())
        .filter(|c| !full.contains(c.as_str()))
        .collect();
    let body = serde_json::json!({"error": {"message": message, "causes": causes, "hint": hint}});
    eprintln!("{body}");
}

/// `error: …` with the cause chain; a `hint:` line is part of the message where one helps.
fn print_error(e: &anyhow::Error) {
    let mut msg = format!("error: {e}");
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(&format!("\n  caused by: {c}"));
        }
    }
    eprintln!("{msg}");
}

fn init_tracing(verbose: u8, docker_debug: bool) {
    let default = match (verbose, docker_debug) {
        (0, false) => "warn",
        (1, false) => "info",
        (0 | 1, true) | (2, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal who did not ask for none.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}
