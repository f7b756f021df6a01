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
    let matches =
        match in_invoked_name(cli::Cli::command(), display_name).try_get_matches_from(&inv.args) {
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
    let json = args.global.json;
    let result = runtime.block_on(async {
        let ctx = commands::Ctx::new(&args.global, &inv)?;
        tokio::select! {
            r = commands::run(args.command, ctx) => r,
            _ = cancelled() => Err(anyhow::Error::new(modelpack_common::Error::Cancelled)),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            if json {
                print_json_error(&e, display_name);
            } else {
                print_error(&e, display_name);
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
fn print_json_error(e: &anyhow::Error, name: &str) {
    let full = said_as(&e.to_string(), name);
    let (message, hint) = match full.split_once("\nhint: ") {
        Some((m, h)) => (m.to_string(), Some(h.to_string())),
        None => (full.clone(), None),
    };
    let causes: Vec<String> = e
        .chain()
        .skip(1)
        .map(|c| said_as(&c.to_string(), name))
        .filter(|c| !full.contains(c.as_str()))
        .collect();
    let body = serde_json::json!({"error": {"message": message, "causes": causes, "hint": hint}});
    eprintln!("{body}");
}

/// `error: …` with the cause chain; a `hint:` line is part of the message where one helps.
fn print_error(e: &anyhow::Error, name: &str) {
    let mut msg = said_as(&format!("error: {e}"), name);
    for cause in e.chain().skip(1) {
        let c = said_as(&cause.to_string(), name);
        if !msg.contains(&c) {
            msg.push_str(&format!("\n  caused by: {c}"));
        }
    }
    eprintln!("{msg}");
}

/// Hints (in common and here) name the standalone command, `` `modelpack
/// VERB …` ``; a user who typed `docker modelpack` is told to type that.
fn said_as(text: &str, name: &str) -> String {
    let standalone = text.replace("`docker modelpack ", "`modelpack ");
    if name == "modelpack" {
        standalone
    } else {
        standalone.replace("`modelpack ", &format!("`{name} "))
    }
}

/// The CLI definition under the invoked name, its examples included
/// (written for the standalone `modelpack`).
fn in_invoked_name(cmd: clap::Command, name: &'static str) -> clap::Command {
    let mut cmd = cmd.name(name).bin_name(name);
    if name == "modelpack" {
        return cmd;
    }
    let verbs: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for verb in verbs {
        cmd = cmd.mut_subcommand(verb, |sub| examples_as(sub, name));
    }
    cmd
}

fn examples_as(mut cmd: clap::Command, name: &str) -> clap::Command {
    if let Some(help) = cmd.get_after_help() {
        let text = help
            .to_string()
            .lines()
            .map(|line| {
                // The word `modelpack` as a command (not `docker modelpack`, not a path).
                let words: Vec<&str> = line.split(' ').collect();
                let renamed: Vec<&str> = words
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        if *w == "modelpack" && (i == 0 || words[i - 1] != "docker") {
                            name
                        } else {
                            w
                        }
                    })
                    .collect();
                renamed.join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n");
        cmd = cmd.after_help(text);
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for s in subs {
        cmd = cmd.mut_subcommand(s, |sub| examples_as(sub, name));
    }
    cmd
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_and_examples_use_the_name_the_user_typed() {
        let hint = "no model\nhint: run `modelpack ls`, or `docker modelpack pull x`";
        assert_eq!(
            said_as(hint, "docker modelpack"),
            "no model\nhint: run `docker modelpack ls`, or `docker modelpack pull x`"
        );
        assert_eq!(
            said_as(hint, "modelpack"),
            "no model\nhint: run `modelpack ls`, or `modelpack pull x`"
        );
        use clap::CommandFactory;
        let cmd = in_invoked_name(cli::Cli::command(), "docker modelpack");
        for sub in cmd.get_subcommands() {
            let Some(help) = sub.get_after_help() else {
                continue;
            };
            let help = help.to_string();
            for line in help.lines().filter(|l| l.contains("modelpack ")) {
                assert!(
                    line.contains("docker modelpack "),
                    "{}: {line:?} still says the standalone name",
                    sub.get_name()
                );
            }
        }
    }
}
