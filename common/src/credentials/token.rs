//! The registry token flow (distribution `token.md`/`oauth.md`): parse the
//! `WWW-Authenticate` challenge, GET the realm with Basic credentials (or
//! anonymously), or POST an OAuth2 refresh-token grant for identity tokens
//! (falling back to GET when the server does not support POST), cache tokens
//! per (registry, scope set) and renew them before they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use reqwest::Url;
use serde::Deserialize;

use crate::error::{Error, Result};

use super::Credential;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: String,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut params: HashMap<String, String> = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n)
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                val.push(*c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), val);
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic {
            realm: params.remove("realm").unwrap_or_default(),
        }),
        "bearer" => Some(Challenge::Bearer {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        }),
        _ => None,
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A token response is a few KiB; more than this is refused, not buffered.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// Tokens by (registry, endpoint origin, sorted scopes). No `Debug`: it holds tokens.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

fn key(registry: &str, origin: &Url, scopes: &[String]) -> (String, String) {
    let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
    s.sort();
    s.dedup();
    (
        format!("{registry} {}", origin.origin().ascii_serialization()),
        s.join(" "),
    )
}

/// The realm a Bearer challenge names must be an http(s) URL, and not plain
/// http when the registry is reached over https: the token request carries
/// the user's password or refresh token.
fn check_realm(registry: &str, origin: &Url, realm: &str) -> Result<Url> {
    let refuse = |why: String| Error::Auth {
        registry: registry.into(),
        message: format!("refusing the token service {realm:?}: {why}"),
        hint: None,
    };
    let url = Url::parse(realm).map_err(|_| refuse("not a URL".into()))?;
    match (origin.scheme(), url.scheme()) {
        (_, "https") | ("http", "http") => Ok(url),
        ("https", "http") => Err(refuse(format!(
            "plain http, while {registry} is reached over https"
        ))),
        (_, other) => Err(refuse(format!("unsupported scheme {other:?}"))),
    }
}

fn login_hint(registry: &str) -> Option<String> {
    Some(format!(
        "run `docker login {registry}` (or pass -u/-p) first"
    ))
}

impl TokenCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn invalidate(&self, registry: &str, origin: &Url, scopes: &[String]) {
        self.tokens
            .lock()
            .unwrap()
            .remove(&key(registry, origin, scopes));
    }

    /// The `Authorization` header value for `scopes` on `registry`, whose
    /// endpoint at `origin` sent `challenge`. The caller guarantees the
    /// challenge came from `origin` itself; the realm it names is checked here.
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        registry: &str,
        origin: &Url,
        challenge: &Challenge,
        scopes: &[String],
        credential: Option<&Credential>,
    ) -> Result<String> {
        let (realm, service, challenge_scope) = match challenge {
            Challenge::Basic { .. } => {
                return match credential {
                    Some(Credential::Basic { username, password }) => Ok(format!(
                        "Basic {}",
                        STANDARD.encode(format!("{username}:{password}"))
                    )),
                    Some(Credential::RegistryToken(t)) => Ok(format!("Bearer {t}")),
                    _ => Err(Error::Auth {
                        registry: registry.into(),
                        message: "the registry asks for a username and password".into(),
                        hint: login_hint(registry),
                    }),
                };
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => (realm, service, scope),
        };
        let realm = &check_realm(registry, origin, realm)?;
        if let Some(Credential::RegistryToken(t)) = credential {
            return Ok(format!("Bearer {t}"));
        }
        let mut scopes: Vec<String> = scopes.to_vec();
        if scopes.is_empty() {
            scopes.extend(challenge_scope.iter().cloned());
        }
        let k = key(registry, origin, &scopes);
        if let Some((t, exp)) = self.tokens.lock().unwrap().get(&k)
            && Instant::now() < *exp
        {
            return Ok(format!("Bearer {t}"));
        }
        let resp = match credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", "modelpack".to_string()),
                ];
                if let Some(s) = service {
                    form.push(("service", s.clone()));
                }
                if !scopes.is_empty() {
                    form.push(("scope", scopes.join(" ")));
                }
                let r = http
                    .post(realm.clone())
                    .form(&form)
                    .send()
                    .await
                    .map_err(|e| net_err(registry, realm, e))?;
                if r.status() == reqwest::StatusCode::NOT_FOUND
                    || r.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED
                {
                    self.get_token(http, registry, realm, service.as_deref(), &scopes, None)
                        .await?
                } else {
                    r
                }
            }
            other => {
                self.get_token(http, registry, realm, service.as_deref(), &scopes, other)
                    .await?
            }
        };
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let message = if credential.is_some() {
                "the token service rejected the stored credentials"
            } else {
                "anonymous access was refused by the token service"
            };
            return Err(Error::Auth {
                registry: registry.into(),
                message: message.into(),
                hint: login_hint(registry),
            });
        }
        if !status.is_success() {
            return Err(Error::Registry {
                status: None,
                registry: registry.into(),
                message: format!("token service {realm} answered {status}"),
            });
        }
        let bytes = read_capped(registry, realm, resp).await?;
        let body: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| Error::Registry {
            status: None,
            registry: registry.into(),
            message: format!("token service {realm} sent an unreadable answer: {e}"),
        })?;
        let token = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Registry {
                status: None,
                registry: registry.into(),
                message: format!("token service {realm} sent no token"),
            })?;
        let ttl = body.expires_in.unwrap_or(60).max(60);
        // Renew a little early so a token never expires mid-request.
        let expiry = Instant::now() + Duration::from_secs(ttl.saturating_sub(10));
        self.tokens
            .lock()
            .unwrap()
            .insert(k, (token.clone(), expiry));
        tracing::debug!(registry, scopes = ?scopes, ttl, "obtained registry token");
        Ok(format!("Bearer {token}"))
    }

    async fn get_token(
        &self,
        http: &reqwest::Client,
        registry: &str,
        realm: &Url,
        service: Option<&str>,
        scopes: &[String],
        cred: Option<&Credential>,
    ) -> Result<reqwest::Response> {
        let mut q: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            q.push(("service", s));
        }
        for s in scopes {
            q.push(("scope", s));
        }
        let mut req = http.get(realm.clone()).query(&q);
        if let Some(Credential::Basic { username, password }) = cred {
            req = req.basic_auth(username, Some(password));
        }
        req.send().await.map_err(|e| net_err(registry, realm, e))
    }
}

/// The token response body, at most [`MAX_TOKEN_RESPONSE`] bytes.
async fn read_capped(registry: &str, realm: &Url, resp: reqwest::Response) -> Result<Vec<u8>> {
    let too_large = |declared| Error::TooLarge {
        what: format!("the answer of token service {realm} for {registry}"),
        limit: MAX_TOKEN_RESPONSE,
        declared,
    };
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > MAX_TOKEN_RESPONSE) {
        return Err(too_large(declared));
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| net_err(registry, realm, e))?;
        match (out.len() as u64).checked_add(chunk.len() as u64) {
            Some(n) if n <= MAX_TOKEN_RESPONSE => out.extend_from_slice(&chunk),
            _ => return Err(too_large(declared)),
        }
    }
    Ok(out)
}

fn net_err(registry: &str, realm: &Url, e: reqwest::Error) -> Error {
    Error::Registry {
        status: None,
        registry: registry.into(),
        message: format!(
            "cannot reach the token service {realm}: {}",
            e.without_url()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="http://127.0.0.1:5003/token",service="test-registry",scope="repository:models/tiny:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:5003/token".into(),
                service: Some("test-registry".into()),
                scope: Some("repository:models/tiny:pull,push".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic {
                realm: "basic-realm".into()
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
