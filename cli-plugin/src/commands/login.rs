//! `login REGISTRY` / `logout REGISTRY`: verify credentials against the
//! registry, then store them where docker would (the configured credential
//! helper, else config.json with mode 0600).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use modelpack_common::credentials::{CredentialOptions, CredentialStore, StoredIn};
use modelpack_common::reference::normalize_registry;

use super::Ctx;
use super::remote::RegistryArgs;

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host, e.g. 127.0.0.1:5000 or docker.io
    pub registry: String,
    #[command(flatten)]
    pub registry_args: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host
    pub registry: String,
}

fn host(s: &str) -> String {
    let s = s
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    normalize_registry(s.split('/').next().unwrap_or(s))
}

pub async fn login(args: LoginArgs, ctx: Ctx) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let registry = host(&args.registry);
    let mut ra = args.registry_args.clone();
    if ra.password.is_some() {
        // docker's own warning: the password is in the shell history and `ps`.
        ctx.out
            .problem("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let interactive = std::io::stdin().is_terminal();
    if ra.username.is_none() && ra.identity_token.is_none() && interactive {
        ra.username = Some(read_username()?);
    }
    if ra.username.is_some() && ra.password.is_none() && !ra.password_stdin {
        ra.password = Some(read_password(interactive)?);
    }
    let opts = ra.credential_options(&ctx)?;
    let cred = opts.explicit.clone().context(
        "login needs credentials: -u USER with -p, --password-stdin, or --identity-token",
    )?;
    // Prove the credentials work before storing them.
    let probe_ra = RegistryArgs {
        password_stdin: false,
        password: None,
        username: None,
        identity_token: None,
        ..ra.clone()
    };
    let mut client_opts = probe_ra.credential_options(&ctx)?;
    client_opts.explicit = Some(cred.clone());
    verify(&ctx, &probe_ra, client_opts, &registry).await?;
    let store = CredentialStore::new(CredentialOptions {
        explicit: None,
        ..opts
    });
    match store.store(&registry, &cred)? {
        StoredIn::Helper(h) => ctx.out.status(format!("Login Succeeded (stored with docker-credential-{h})")),
        StoredIn::ConfigFile(p) => ctx.out.status(format!("Login Succeeded (stored in {}, unencrypted; configure a credential helper to avoid this)", p.display())),
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(
    ctx: &Ctx,
    ra: &RegistryArgs,
    opts: CredentialOptions,
    registry: &str,
) -> Result<()> {
    use std::sync::Arc;
    let client = modelpack_common::registry::RegistryClient::new(
        modelpack_common::registry::TransportOptions {
            plain_http: ra.plain_http,
            insecure: ra.insecure,
            ca_file: ra.ca_file.clone(),
            hosts_dir: ra.hosts_dir.clone(),
            ..Default::default()
        },
        Arc::new(CredentialStore::new(opts)),
    )?;
    let _ = ctx;
    client.check_login(registry).await?;
    Ok(())
}

fn read_username() -> Result<String> {
    eprint!("Username: ");
    let mut s = String::new();
    std::io::stdin()
        .read_line(&mut s)
        .context("cannot read the username")?;
    let u = s.trim().to_string();
    if u.is_empty() {
        anyhow::bail!("a username is required");
    }
    Ok(u)
}

/// The password without echo on a terminal; a line of stdin otherwise.
fn read_password(interactive: bool) -> Result<String> {
    if interactive {
        return rpassword::prompt_password("Password: ").context("cannot read the password");
    }
    eprint!("Password: ");
    let mut s = String::new();
    std::io::stdin()
        .read_line(&mut s)
        .context("cannot read the password")?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

pub async fn logout(args: LogoutArgs, ctx: Ctx) -> Result<ExitCode> {
    let registry = host(&args.registry);
    let store = CredentialStore::new(CredentialOptions {
        docker_config_dir: ctx.docker_config_dir.clone(),
        ..Default::default()
    });
    if store.erase(&registry)? {
        ctx.out
            .status(format!("Removed login credentials for {registry}"));
    } else {
        ctx.out.status(format!("Not logged in to {registry}"));
    }
    Ok(ExitCode::SUCCESS)
}
