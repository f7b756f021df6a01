//! `config show`: the settings in effect and where each came from — the
//! store directory (flag, `$MODELPACK_HOME`, the config file, default), the
//! config file (`$MODELPACK_CONFIG` or the default path, and whether it
//! exists), concurrency, the transport's environment variables and the
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

pub async fn run(cmd: ConfigCommand, ctx: Ctx) -> Result<ExitCode> {
    let ConfigCommand::Show = cmd;
    let (file, file_from) = match Settings::location() {
        Some((p, true)) => (Some(p), "MODELPACK_CONFIG"),
        Some((p, false)) => (Some(p), "default"),
        None => (None, "none"),
    };
    let settings = &ctx.settings;
    let (concurrency, concurrency_from) = match std::env::var("MODELPACK_CONCURRENCY") {
        Ok(v) if !v.is_empty() => (v, "MODELPACK_CONCURRENCY".to_string()),
        _ => match settings.concurrency {
            Some(n) => (
                n.to_string(),
                format!("concurrency, {}", settings.where_set()),
            ),
            None => (
                super::ctx::DEFAULT_CONCURRENCY.to_string(),
                "default".to_string(),
            ),
        },
    };
    let env_set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let registries: serde_json::Map<String, serde_json::Value> = settings
        .registries
        .iter()
        .map(|(host, r)| {
            (
                host.clone(),
                serde_json::json!({
                    "legacyCnai": r.legacy_cnai,
                    "verifyKey": r.verify_key,
                    "plainHttp": r.plain_http,
                    "caFile": r.ca_file,
                }),
            )
        })
        .collect();
    let exists = file.as_ref().is_some_and(|p| p.is_file());
    if ctx.out.json {
        ctx.out.print_json(&serde_json::json!({
            "storageDir": {"value": ctx.storage_dir, "from": ctx.storage_from},
            "configFile": {"value": file, "from": file_from, "exists": exists},
            "concurrency": {"value": concurrency.parse::<u64>().ok(), "from": concurrency_from},
            "environment": {
                "plainHttp": env_set("MODELPACK_PLAIN_HTTP"),
                "caFile": std::env::var_os("MODELPACK_CA_FILE").filter(|v| !v.is_empty()).map(std::path::PathBuf::from),
            },
            "registries": registries,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    ctx.out.data(format!(
        "storage dir:  {} ({})",
        ctx.storage_dir.display(),
        ctx.storage_from
    ));
    match &file {
        Some(p) => ctx.out.data(format!(
            "config file:  {} ({file_from}{})",
            p.display(),
            if exists { "" } else { ", not present" }
        )),
        None => ctx.out.data("config file:  none (no $HOME)"),
    }
    ctx.out
        .data(format!("concurrency:  {concurrency} ({concurrency_from})"));
    if env_set("MODELPACK_PLAIN_HTTP") {
        ctx.out
            .data("plain HTTP:   every registry (MODELPACK_PLAIN_HTTP)");
    }
    if let Some(ca) = std::env::var_os("MODELPACK_CA_FILE").filter(|v| !v.is_empty()) {
        ctx.out.data(format!(
            "CA file:      {} for every registry (MODELPACK_CA_FILE)",
            std::path::Path::new(&ca).display()
        ));
    }
    if settings.registries.is_empty() {
        ctx.out.data("registries:   none configured");
    }
    for (host, r) in &settings.registries {
        let mut said = vec![format!("legacy-cnai = {}", r.legacy_cnai)];
        if r.plain_http {
            said.push("plain-http = true".into());
        }
        if let Some(ca) = &r.ca_file {
            said.push(format!("ca-file = {}", ca.display()));
        }
        if let Some(k) = &r.verify_key {
            said.push(format!("verify-key = {}", k.display()));
        }
        ctx.out.data(format!(
            "registry {host}: {} ({})",
            said.join(", "),
            settings.where_set()
        ));
    }
    Ok(ExitCode::SUCCESS)
}
