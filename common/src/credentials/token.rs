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

/// Tokens by (registry, sorted scopes).
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

fn key(registry: &str, scopes: &[String]) -> (String, String) {
    let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
    s.sort();
    s.dedup();
    (registry.to_string(), s.join(" "))
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

    pub fn invalidate(&self, registry: &str, scopes: &[String]) {
        self.tokens.lock().unwrap().remove(&key(registry, scopes));
    }

    /// The `Authorization` header value for `scopes` on `registry`.
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        registry: &str,
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
        if let Some(Credential::RegistryToken(t)) = credential {
            return Ok(format!("Bearer {t}"));
        }
        let mut scopes: Vec<String> = scopes.to_vec();
        if scopes.is_empty() {
            scopes.extend(challenge_scope.iter().cloned());
        }
        let k = key(registry, &scopes);
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
                    .post(realm)
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
                registry: registry.into(),
                message: format!("token service {realm} answered {status}"),
            });
        }
        let body: TokenResponse = resp.json().await.map_err(|e| Error::Registry {
            registry: registry.into(),
            message: format!("token service {realm} sent an unreadable answer: {e}"),
        })?;
        let token = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Registry {
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
        realm: &str,
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
        let mut req = http.get(realm).query(&q);
        if let Some(Credential::Basic { username, password }) = cred {
            req = req.basic_auth(username, Some(password));
        }
        req.send().await.map_err(|e| net_err(registry, realm, e))
    }
}

fn net_err(registry: &str, realm: &str, e: reqwest::Error) -> Error {
    Error::Registry {
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
