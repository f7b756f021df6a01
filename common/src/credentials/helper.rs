//! The docker credential-helper protocol: `docker-credential-<name> get|store|erase`
//! over stdin/stdout. "credentials not found" means anonymous, not failure.

use std::io::Write;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::Credential;

const NOT_FOUND: &str = "credentials not found in native keychain";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperCred {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

fn run(helper: &str, verb: &str, input: &[u8]) -> Result<(bool, String)> {
    let bin = format!("docker-credential-{helper}");
    let mut child = Command::new(&bin)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Credentials(format!(
                "cannot run credential helper {bin} (configured in config.json): {e}"
            ))
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input)
        .map_err(|e| Error::Credentials(format!("{bin} {verb}: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Credentials(format!("{bin} {verb}: {e}")))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

pub fn get(helper: &str, server: &str) -> Result<Option<Credential>> {
    let (ok, out) = run(helper, "get", server.as_bytes())?;
    if !ok {
        if out.contains(NOT_FOUND) {
            return Ok(None);
        }
        return Err(Error::Credentials(format!(
            "docker-credential-{helper} get {server}: {out}"
        )));
    }
    let c: HelperCred = serde_json::from_str(&out).map_err(|_| {
        Error::Credentials(format!(
            "docker-credential-{helper} get {server}: unexpected output"
        ))
    })?;
    if c.username.is_empty() && c.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if c.username == "<token>" {
        Credential::IdentityToken(c.secret)
    } else {
        Credential::Basic {
            username: c.username,
            password: c.secret,
        }
    }))
}

pub fn store(helper: &str, server: &str, cred: &Credential) -> Result<()> {
    let (username, secret) = match cred {
        Credential::Basic { username, password } => (username.clone(), password.clone()),
        Credential::IdentityToken(t) => ("<token>".to_string(), t.clone()),
        Credential::RegistryToken(_) => {
            return Err(Error::Credentials(
                "a registry token cannot be stored in a credential helper".into(),
            ));
        }
    };
    let body = serde_json::to_vec(&HelperCred {
        server_url: server.into(),
        username,
        secret,
    })
    .expect("serialises");
    let (ok, out) = run(helper, "store", &body)?;
    if !ok {
        return Err(Error::Credentials(format!(
            "docker-credential-{helper} store {server}: {out}"
        )));
    }
    Ok(())
}

pub fn erase(helper: &str, server: &str) -> Result<bool> {
    let (ok, out) = run(helper, "erase", server.as_bytes())?;
    if !ok {
        if out.contains(NOT_FOUND) {
            return Ok(false);
        }
        return Err(Error::Credentials(format!(
            "docker-credential-{helper} erase {server}: {out}"
        )));
    }
    Ok(true)
}
