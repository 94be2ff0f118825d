//! One row's request to the risk endpoint, with its retries.
//!
//! Every attempt waits for the pacer, so retries count against the rate like
//! any other request. What each answer means is decided by [`classify`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};

use super::classify::{Verdict, classify};
use super::token::{Token, TokenError, TokenProvider};
use super::transport::{Transport, encode_query_value, split_url};
use super::{ApiPath, Reply, RiskRequest, Scene};
use crate::clock::now_ms;
use crate::outcome::{Answer, PauseReason, RowStatus};
use crate::pacer::Pacer;
use crate::redact::{redact, redacted};

/// Refreshing a rejected token and trying again is allowed this many times per row.
const TOKEN_RETRIES: u32 = 2;

/// Everything a request needs, shared by all in-flight requests.
pub struct RiskClient {
    http: Arc<Transport>,
    pub url: String,
    pub scene: Scene,
    pub tokens: Arc<TokenProvider>,
    pub pacer: Arc<Pacer>,
    pub max_retries: u32,
    /// Identifies the run in `client_msg_id`.
    pub run_tag: String,
    /// Set when the run stops: calls waiting to retry give up instead.
    pub stopping: Arc<AtomicBool>,
    /// The request target (path and query) with the current token, built once per token.
    endpoint: std::sync::Mutex<Option<(u64, Arc<str>)>>,
    /// Named in the rank API's body.
    appid: String,
}

/// How one row's call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEnd {
    /// A final answer for the row (a level or a per-row verdict).
    Answered(Answer),
    /// Retries ran out or the answer is not documented; `Answer` has the last attempt.
    Failed(Answer),
    /// A whole-run condition: stop dispatching; the row stays pending.
    Pause(PauseReason, Answer),
    /// The run cannot go on.
    Fatal(String),
    /// The run stopped before this row's first request was sent.
    NotSent,
}

/// The result of one row's call, sent back to the runner.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub end: CallEnd,
    /// Requests sent for this row in this call.
    pub attempts: u32,
    /// How long the call held its concurrency slot, waits for the pacer left out.
    pub busy: Duration,
}

impl RiskClient {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        http: Arc<Transport>,
        base_url: &str,
        path: ApiPath,
        scene: Scene,
        tokens: Arc<TokenProvider>,
        pacer: Arc<Pacer>,
        max_retries: u32,
        run_tag: String,
    ) -> anyhow::Result<RiskClient> {
        let url = format!("{base_url}{}", path.as_str());
        Ok(RiskClient {
            http,
            url,
            scene,
            tokens,
            pacer,
            max_retries,
            run_tag,
            stopping: Arc::new(AtomicBool::new(false)),
            appid: String::new(),
            endpoint: std::sync::Mutex::new(None),
        })
    }

    /// The appid the rank API's body names (scene "rank" only).
    pub fn with_appid(mut self, appid: String) -> RiskClient {
        self.appid = appid;
        self
    }

    /// Sends `request` for input row `row` until it has an answer, its retries
    /// run out, or the run must stop. `earlier_attempts` continues the
    /// `client_msg_id` numbering across invocations.
    pub async fn call(&self, row: u64, request: &RiskRequest, earlier_attempts: u32) -> CallResult {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(20))
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_retries as usize)
            .build();
        let mut attempts = 0u32;
        let mut token_retries = 0u32;
        let started = Instant::now();
        let mut paced = Duration::ZERO;
        // The time the call held its slot, not counting the pacer's waits.
        let end = |end: CallEnd, attempts: u32, paced: Duration| CallResult {
            end,
            attempts,
            busy: started.elapsed().saturating_sub(paced),
        };
        if self.stopping.load(Ordering::Relaxed) {
            return end(CallEnd::NotSent, 0, paced);
        }
        loop {
            let last = match self.tokens.current().await {
                Err(TokenError::Fatal(message)) => {
                    return end(CallEnd::Fatal(message), attempts, paced);
                }
                Err(TokenError::Transient(message)) => failed_answer(None, message),
                Ok(token) => {
                    let waiting = Instant::now();
                    self.pacer.ready().await;
                    paced += waiting.elapsed();
                    if attempts == 0 && self.stopping.load(Ordering::Relaxed) {
                        return end(CallEnd::NotSent, 0, paced);
                    }
                    attempts += 1;
                    let message_id = format!(
                        "riskbatch-{}-{row}-{}",
                        self.run_tag,
                        earlier_attempts + attempts
                    );
                    match self.send(&token, request, &message_id).await {
                        Err(SendError::Transient(message)) => failed_answer(None, message),
                        Err(SendError::RowRefused(status, message)) => {
                            let answer = Answer {
                                status,
                                ..failed_answer(None, message)
                            };
                            return end(CallEnd::Answered(answer), attempts, paced);
                        }
                        Err(SendError::Denied(message)) => {
                            self.stopping.store(true, Ordering::Relaxed);
                            return end(CallEnd::Fatal(message), attempts, paced);
                        }
                        Ok(reply) => {
                            let verdict = classify(&reply);
                            let answer = answer_of(reply, &verdict);
                            match verdict {
                                Verdict::Level(_) | Verdict::Row(_) => {
                                    return end(CallEnd::Answered(answer), attempts, paced);
                                }
                                Verdict::Unknown => {
                                    return end(CallEnd::Failed(answer), attempts, paced);
                                }
                                // Stop the other calls from sending at once, before
                                // the runner hears of it: every request sent now
                                // would get the same answer.
                                Verdict::Pause(reason) => {
                                    self.stopping.store(true, Ordering::Relaxed);
                                    return end(CallEnd::Pause(reason, answer), attempts, paced);
                                }
                                Verdict::Fatal(message) => {
                                    self.stopping.store(true, Ordering::Relaxed);
                                    return end(CallEnd::Fatal(message), attempts, paced);
                                }
                                Verdict::Token if token_retries < TOKEN_RETRIES => {
                                    token_retries += 1;
                                    if let Err(TokenError::Fatal(message)) =
                                        self.tokens.rejected(&token).await
                                    {
                                        return end(CallEnd::Fatal(message), attempts, paced);
                                    }
                                    continue;
                                }
                                Verdict::SlowDown => {
                                    self.pacer.slow_down();
                                    answer
                                }
                                Verdict::Token | Verdict::Retry => answer,
                            }
                        }
                    }
                }
            };
            match backoff.next() {
                Some(delay) if !self.stopping.load(Ordering::Relaxed) => {
                    tokio::time::sleep(delay).await
                }
                _ => return end(CallEnd::Failed(last), attempts, paced),
            }
        }
    }

    /// The path and query to request, the token percent-encoded as needed.
    fn endpoint(&self, token: &Token) -> Result<Arc<str>, String> {
        let mut cached = self.endpoint.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((generation, target)) = cached.as_ref()
            && *generation == token.generation
        {
            return Ok(target.clone());
        }
        let (_, path) = split_url(&self.url);
        let separator = if path.contains('?') { '&' } else { '?' };
        let target: Arc<str> = format!(
            "{path}{separator}access_token={}",
            encode_query_value(&token.value)
        )
        .into();
        *cached = Some((token.generation, target.clone()));
        Ok(target)
    }

    async fn send(
        &self,
        token: &Token,
        request: &RiskRequest,
        message_id: &str,
    ) -> Result<Reply, SendError> {
        let target = self.endpoint(token).map_err(SendError::Transient)?;
        let body = match self.scene {
            Scene::Rank(scene) => request.rank_body(&self.appid, scene),
            scene => request.body(scene, message_id),
        };
        let exchange = self
            .http
            .post_json(&target, body)
            .await
            .map_err(SendError::Transient)?;
        let (status, body) = (exchange.status, exchange.body);
        if !status.is_success() {
            return Err(http_refusal(status, &self.url));
        }
        Reply::parse(&body).map_err(SendError::Transient)
    }
}

/// Why a request got no WeChat reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SendError {
    /// The network or the server failed this time: retry.
    Transient(String),
    /// Refused for what this request holds: the row's verdict, no retry.
    RowRefused(RowStatus, String),
    /// Refused for the appid or the endpoint: every request would be.
    Denied(String),
}

/// What a non-2xx HTTP status means. 5xx and 429 are the server's moment;
/// a 4xx is about the request (retrying sends the same bytes) or the caller.
fn http_refusal(status: hyper::StatusCode, url: &str) -> SendError {
    let code = status.as_u16();
    match code {
        413 | 414 => SendError::RowRefused(
            RowStatus::InvalidInput,
            format!("HTTP {status}: WeChat refuses a request this large; shorten the row's fields"),
        ),
        400 | 404 | 405 | 411 | 415 | 422 => SendError::RowRefused(
            RowStatus::ParamError,
            format!("HTTP {status}: WeChat refused this request as malformed"),
        ),
        401 | 403 => SendError::Denied(format!(
            "the risk endpoint {} answered HTTP {status}: the appid or this machine is not \
             allowed to call it; check the appid's permissions and IP whitelist, and [api] \
             base_url and path in the job file",
            redact(url)
        )),
        _ => SendError::Transient(format!("HTTP {status}")),
    }
}

fn failed_answer(errcode: Option<i32>, message: String) -> Answer {
    Answer {
        status: RowStatus::Failed,
        level: None,
        errcode,
        code: None,
        message: Some(message),
        request_id: None,
        checked_at: now_ms(),
    }
}

/// The columns of a row from one reply: inner `msg` when errcode is 0, else `errmsg`.
fn answer_of(reply: Reply, verdict: &Verdict) -> Answer {
    let (status, level) = match verdict {
        Verdict::Level(level) => (RowStatus::Ok, Some(*level)),
        Verdict::Row(status) => (*status, None),
        _ => (RowStatus::Failed, None),
    };
    Answer {
        status,
        level,
        errcode: i32::try_from(reply.errcode).ok(),
        code: reply.code.and_then(|c| i32::try_from(c).ok()),
        message: if reply.errcode == 0 {
            reply.msg
        } else {
            Some(reply.errmsg)
        }
        .filter(|m| !m.is_empty())
        .map(redacted),
        request_id: reply.request_id,
        checked_at: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_takes_inner_msg_on_success_and_errmsg_otherwise() {
        let ok = Reply {
            errcode: 0,
            errmsg: "ok".into(),
            code: Some(0),
            msg: Some("请求成功".into()),
            risklevel: Some(3),
            request_id: Some("r1".into()),
            rank: false,
        };
        let answer = answer_of(ok.clone(), &classify(&ok));
        assert_eq!(answer.status, RowStatus::Ok);
        assert_eq!(answer.level, Some(3));
        assert_eq!((answer.errcode, answer.code), (Some(0), Some(0)));
        assert_eq!(answer.message.as_deref(), Some("请求成功"));

        let expired = Reply {
            errcode: 61010,
            errmsg: "user is not visited recently".into(),
            ..Reply::default()
        };
        let answer = answer_of(expired.clone(), &classify(&expired));
        assert_eq!(answer.status, RowStatus::OpenidExpired);
        assert_eq!(
            (answer.errcode, answer.code, answer.level),
            (Some(61010), None, None)
        );
        assert_eq!(
            answer.message.as_deref(),
            Some("user is not visited recently")
        );
    }
}
