//! `config show`: the settings in effect and where each came from — the
//! store directory (flag, `$MODELPACK_HOME`, default), the config file
//! (`$MODELPACK_CONFIG` or the default path, and whether it exists) and its
//! per-registry settings.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use modelpack_common::settings::Settings;

use super::Ctx;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective settings and where each came from
    #[command(
        after_help = "Examples:\n  modelpack config show\n  MODELPACK_CONFIG=./ci.toml modelpack config show --json"
    )]
    Show,
}

pub async fn run(cmd: ConfigCommand, ctx: Ctx, storage_flag: bool) -> Result<ExitCode> {
    let ConfigCommand::Show = cmd;
    let storage_from = if storage_flag {
        "--storage-dir"
    } else if std::env::var_os("MODELPACK_HOME").is_some_and(|v| !v.is_empty()) {
        "MODELPACK_HOME"
    } else {
        "default"
    };
    let (file, file_from) = match Settings::location() {
        Some((p, true)) => (Some(p), "MODELPACK_CONFIG"),
        Some((p, false)) => (Some(p), "default"),
        None => (None, "none"),
    };
    let settings = Settings::load()?;
    let registries: serde_json::Map<String, serde_json::Value> = settings
        .registries
        .iter()
        .map(|(host, r)| {
            (
                host.clone(),
                serde_json::json!({"legacyCnai": r.legacy_cnai, "verifyKey": r.verify_key}),
            )
        })
        .collect();
    let exists = file.as_ref().is_some_and(|p| p.is_file());
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({
            "storageDir": {"value": ctx.storage_dir, "from": storage_from},
            "configFile": {"value": file, "from": file_from, "exists": exists},
            "registries": registries,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "storage dir:  {} ({storage_from})",
        ctx.storage_dir.display()
    );
    match &file {
        Some(p) => println!(
            "config file:  {} ({file_from}{})",
            p.display(),
            if exists { "" } else { ", not present" }
        ),
        None => println!("config file:  none (no $HOME)"),
    }
    if settings.registries.is_empty() {
        println!("registries:   none configured");
    }
    for (host, r) in &settings.registries {
        println!(
            "registry {host}: legacy-cnai = {}{}",
            r.legacy_cnai,
            r.verify_key
                .as_ref()
                .map(|k| format!(", verify-key = {}", k.display()))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
