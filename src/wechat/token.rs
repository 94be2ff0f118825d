//! The access token: one per appid, shared by every request of the run.
//!
//! A token is refreshed only when it is about to expire or when WeChat rejects
//! it, and a rejection refreshes only if the rejected token is still the
//! current one (compare by generation), so 64 requests failing together with
//! the same stale token cause one refresh, not 64. With a [`TokenCache`] the
//! token is shared with other processes through the state folder, and a
//! refresh first looks whether another process has already replaced it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::transport::{Transport, encode_query_value, split_url};
use crate::clock::now_ms;
use crate::job::TokenSource;
use crate::redact::redact;
use crate::state::token_cache::{CachedToken, TokenCache};

/// Refresh a token this long before WeChat says it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// A token from a command has no known lifetime; ask again after this.
const COMMAND_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
const FETCH_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone)]
pub struct Credentials {
    pub appid: String,
    pub secret: String,
}

/// A token in use, with the generation that identifies it for compare-and-swap refreshes.
#[derive(Debug, Clone)]
pub struct Token {
    pub value: String,
    pub generation: u64,
    refresh_at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The token endpoint is busy or unreachable: the request may be retried.
    Transient(String),
    /// Credentials or permissions are wrong: the run cannot go on.
    Fatal(String),
}

pub struct TokenProvider {
    http: Arc<Transport>,
    /// The path before `/cgi-bin/…` (empty for WeChat itself).
    prefix: String,
    source: TokenSource,
    credentials: Option<Credentials>,
    current: RwLock<Option<Token>>,
    refresh_lock: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    fetches: AtomicU64,
    cache: Option<TokenCache>,
    /// A stable token that was rejected and handed back unchanged: if it is
    /// rejected again, force_refresh.
    suspect: std::sync::Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct TokenReply {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
}

impl TokenProvider {
    pub fn new(
        http: Arc<Transport>,
        base_url: &str,
        source: TokenSource,
        credentials: Option<Credentials>,
    ) -> TokenProvider {
        TokenProvider {
            http,
            prefix: split_url(base_url).1.trim_end_matches('/').to_string(),
            source,
            credentials,
            current: RwLock::new(None),
            refresh_lock: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            cache: None,
            suspect: std::sync::Mutex::new(None),
        }
    }

    /// Shares the token with other processes through `cache`.
    pub fn with_cache(mut self, cache: TokenCache) -> TokenProvider {
        self.cache = Some(cache);
        self
    }

    /// How many times this process asked for a token.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// A token believed valid, fetched only if there is none or it is about to expire.
    pub async fn current(&self) -> Result<Token, TokenError> {
        if let Some(token) = self.cached()
            && Instant::now() < token.refresh_at
        {
            return Ok(token);
        }
        self.refresh(None).await
    }

    /// WeChat rejected `token` (40001, 40014, 42001): get another, unless another
    /// request already did.
    pub async fn rejected(&self, token: &Token) -> Result<Token, TokenError> {
        self.refresh(Some(token)).await
    }

    fn cached(&self) -> Option<Token> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn refresh(&self, rejected: Option<&Token>) -> Result<Token, TokenError> {
        let _one_at_a_time = self.refresh_lock.lock().await;
        if let Some(token) = self.cached() {
            let replaced = rejected.is_some_and(|r| r.generation != token.generation);
            let still_good = rejected.is_none() && Instant::now() < token.refresh_at;
            if replaced || still_good {
                return Ok(token);
            }
        }
        let _other_processes_wait = match &self.cache {
            Some(cache) => Some(self.lock_cache(cache).await?),
            None => None,
        };
        if let Some(stored) = self.cache.as_ref().and_then(TokenCache::read) {
            let fresh = now_ms() < stored.refresh_at_ms;
            let not_rejected = rejected.is_none_or(|r| r.value != stored.access_token);
            if fresh && not_rejected {
                let left = Duration::from_millis((stored.refresh_at_ms - now_ms()).max(0) as u64);
                return Ok(self.install(stored.access_token, Instant::now() + left));
            }
        }
        let (mut value, mut lifetime) = self.fetch(false).await?;
        if let Some(rejected) = rejected
            && rejected.value == value
            && self.source == TokenSource::Stable
        {
            let force = {
                let mut suspect = self.suspect.lock().unwrap_or_else(|e| e.into_inner());
                let again = suspect.as_deref() == Some(value.as_str());
                *suspect = if again { None } else { Some(value.clone()) };
                again
            };
            if force {
                // stable_token keeps handing back a token WeChat keeps rejecting:
                // only now is force_refresh warranted (it is limited to 20 a day).
                tracing::warn!(
                    "the stable token was rejected twice although it should be valid; forcing a refresh"
                );
                (value, lifetime) = self.fetch(true).await?;
            }
        }
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        let until_refresh = lifetime.saturating_sub(margin).max(Duration::from_secs(1));
        let token = self.install(value, Instant::now() + until_refresh);
        if let Some(cache) = &self.cache {
            let now = now_ms();
            let stored = CachedToken {
                access_token: token.value.clone(),
                refresh_at_ms: now + until_refresh.as_millis() as i64,
                expires_at_ms: now + lifetime.as_millis() as i64,
            };
            if let Err(err) = cache.write(&stored) {
                tracing::warn!("could not share the access token with other processes: {err:#}");
            }
        }
        Ok(token)
    }

    /// Makes `value` the token in use, with a new generation.
    fn install(&self, value: String, refresh_at: Instant) -> Token {
        let token = Token {
            value,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            refresh_at,
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        token
    }

    async fn lock_cache(
        &self,
        cache: &TokenCache,
    ) -> Result<crate::state::token_cache::RefreshLock, TokenError> {
        let cache = cache.clone();
        let path = cache.path().display().to_string();
        tokio::task::spawn_blocking(move || cache.lock())
            .await
            .map_err(|err| TokenError::Fatal(format!("locking {path}: {err}")))?
            .map_err(|err| TokenError::Fatal(format!("{err:#}")))
    }

    /// Asks for a token, retrying busy answers; returns the token and its lifetime.
    async fn fetch(&self, force: bool) -> Result<(String, Duration), TokenError> {
        if let TokenSource::Command(command) = &self.source {
            self.fetches.fetch_add(1, Ordering::Relaxed);
            return run_token_command(command)
                .await
                .map(|t| (t, COMMAND_TOKEN_LIFETIME));
        }
        let credentials = self.credentials.as_ref().ok_or_else(|| {
            TokenError::Fatal(
                "no WeChat credentials: set the appid and secret environment variables".into(),
            )
        })?;
        let mut last = String::new();
        for attempt in 0..FETCH_ATTEMPTS {
            if attempt > 0 {
                let backoff = Duration::from_millis(200 << attempt.min(6));
                tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64())).await;
            }
            self.fetches.fetch_add(1, Ordering::Relaxed);
            let reply = match self.source {
                TokenSource::Stable => {
                    let body = serde_json::json!({
                        "grant_type": "client_credential",
                        "appid": credentials.appid,
                        "secret": credentials.secret,
                        "force_refresh": force,
                    });
                    let path = format!("{}/cgi-bin/stable_token", self.prefix);
                    self.http
                        .post_json(&path, body.to_string().into_bytes())
                        .await
                }
                _ => {
                    let path = format!(
                        "{}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
                        self.prefix,
                        encode_query_value(&credentials.appid),
                        encode_query_value(&credentials.secret)
                    );
                    self.http.get(&path).await
                }
            };
            let body = match reply {
                Ok(exchange) => exchange.body,
                Err(message) => {
                    last = redact(&message);
                    continue;
                }
            };
            let reply: TokenReply = match serde_json::from_slice(&body) {
                Ok(reply) => reply,
                Err(_) => {
                    last = "the token endpoint answered something that is not JSON".into();
                    continue;
                }
            };
            match (reply.access_token, reply.errcode.unwrap_or(0)) {
                (Some(token), 0) if !token.is_empty() => {
                    let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(7200));
                    return Ok((token, lifetime));
                }
                (_, -1 | 45011) => {
                    last = format!("token endpoint busy ({})", reply.errcode.unwrap_or(-1));
                }
                (_, errcode) => {
                    return Err(TokenError::Fatal(token_error_message(
                        errcode,
                        &redact(&reply.errmsg.unwrap_or_default()),
                    )));
                }
            }
        }
        Err(TokenError::Transient(format!(
            "could not get an access token: {last}"
        )))
    }
}

/// Runs `[api] token = { command = … }`. Its messages name the program
/// only: a command line often carries credentials, and so may its output.
async fn run_token_command(command: &str) -> Result<String, TokenError> {
    let program = program_name(command);
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .await
        .map_err(|err| {
            TokenError::Fatal(format!(
                "the api.token command ({program}) could not start: {err}"
            ))
        })?;
    if !output.status.success() {
        let lines = String::from_utf8_lossy(&output.stderr).lines().count();
        return Err(TokenError::Fatal(format!(
            "the api.token command ({program}) failed with {}; its error output ({lines} lines) \
             is not shown, as it may hold credentials — run the command by hand to see it",
            output.status
        )));
    }
    let token = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(TokenError::Fatal(format!(
            "the api.token command ({program}) printed no usable token: it must print the \
             access_token alone on one line"
        )));
    }
    Ok(token)
}

/// The program a shell command line runs, without its arguments, variable
/// assignments or folder.
fn program_name(command: &str) -> String {
    let word = command
        .split_whitespace()
        .find(|w| !w.contains('='))
        .unwrap_or("");
    let name = word.rsplit('/').next().unwrap_or(word);
    let name: String = name
        .chars()
        .filter(|c| c.is_alphanumeric() || "-_.".contains(*c))
        .take(40)
        .collect();
    if name.is_empty() {
        "a shell command".into()
    } else {
        format!("`{name}`")
    }
}

/// What to fix for each fatal answer of the token endpoints (wechat-api.md §1).
fn token_error_message(errcode: i64, errmsg: &str) -> String {
    let fix = match errcode {
        40002 => "the grant_type is wrong (a bug in riskbatch: please report it)",
        40013 | 41002 => "the appid is wrong or missing: check the variable named by api.appid_env",
        40125 | 41004 => {
            "the secret is wrong or missing: check the variable named by api.secret_env"
        }
        40164 => {
            "this machine's IP is not in the appid's IP whitelist: add it in the WeChat admin console"
        }
        40243 => "the secret is frozen: unfreeze or reset it in the WeChat admin console",
        43002 => "the token endpoint wants POST (a bug in riskbatch: please report it)",
        45009 => {
            "the token endpoint's daily quota is used up: use token = \"stable\" or wait until tomorrow"
        }
        50004 | 50007 => "the appid is forbidden or frozen: see the WeChat admin console",
        89501 | 89503 | 89506 | 89507 => {
            "the admin has not approved (or refused) calls from this IP: approve it in the WeChat admin console"
        }
        _ => "see wechat-api.md §1",
    };
    format!("WeChat refused the access token request with errcode {errcode} ({errmsg}): {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_token_errors_say_what_to_fix() {
        let message = token_error_message(40125, "invalid appsecret");
        assert!(
            message.contains("40125") && message.contains("secret_env"),
            "{message}"
        );
        assert!(token_error_message(40164, "").contains("whitelist"));
    }

    #[test]
    fn a_token_command_is_named_by_its_program_only() {
        let cases = [
            ("curl -s -u ops:hunter2 https://vault/token", "`curl`"),
            ("VAULT_TOKEN=s3cr3t /usr/local/bin/vault read x", "`vault`"),
            ("", "a shell command"),
        ];
        for (command, name) in cases {
            assert_eq!(program_name(command), name);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let command = "echo hunter2 >&2; exit 3 # --password hunter2";
        let Err(TokenError::Fatal(message)) = runtime.block_on(run_token_command(command)) else {
            panic!("a failing command must be fatal");
        };
        assert!(
            !message.contains("hunter2") && message.contains("exit status: 3"),
            "{message}"
        );
    }
}
