//! `version`: the CLI's version, platform and the ModelPack spec it follows.

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<ExitCode> {
    version(ctx)?;
    Ok(ExitCode::SUCCESS)
}

fn version(ctx: &Ctx) -> Result<()> {
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        "modelSpec": "v0.0.7+ (HEAD schema)",
    });
    if ctx.out.json {
        ctx.out.print_json(&info)?;
    } else {
        ctx.out.data(format!(
            "{} {}",
            ctx.display_name,
            env!("CARGO_PKG_VERSION")
        ));
        ctx.out.data(format!(
            "platform: {}",
            info["platform"].as_str().unwrap_or_default()
        ));
        ctx.out.data(format!(
            "model-spec: {}",
            info["modelSpec"].as_str().unwrap_or_default()
        ));
    }
    Ok(())
}
