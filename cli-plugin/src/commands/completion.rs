//! `completion SHELL`: a completion script generated from the same clap
//! definition, under the name the user invoked (`docker-modelpack` in plugin
//! mode, since a shell completes one word).

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;

pub fn run(shell: clap_complete::Shell, ctx: &Ctx) -> Result<ExitCode> {
    use clap::CommandFactory;
    let mut cmd = crate::cli::Cli::command();
    let name = ctx.display_name.replace(' ', "-");
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    // A closed pipe (`| head`) is the reader's choice, not an error.
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
