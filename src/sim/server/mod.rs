//! The simulator's HTTP side: the four WeChat endpoints and `/_sim/stats`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::risk::{fnv1a, level};
use super::tokens::{Rejection, TokenBook};
use super::{FaultRates, SimConfig};
use crate::wechat::{RISK_OBJECT_FIELDS, SERVICE, Scene};

/// How late tokio's timer typically fires (millisecond ticks, rounded up).
const TIMER_LATENESS: Duration = Duration::from_micros(1500);

struct Sim {
    config: SimConfig,
    rates: FaultRates,
    tokens: Mutex<TokenBook>,
    stats: Mutex<Stats>,
    counter: AtomicU64,
}

impl Sim {
    fn new(config: SimConfig) -> Sim {
        Sim {
            rates: config.fault_rates(),
            tokens: Mutex::new(TokenBook::new(config.token_ttl, config.token_grace)),
            stats: Mutex::new(Stats {
                balance_left: config.balance,
                ..Stats::default()
            }),
            config,
            counter: AtomicU64::new(0),
        }
    }
}

/// A transient fault chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Busy,
    InnerError(i64),
    HttpError(u16),
    Drop,
    Malformed,
}

mod answer;
mod rank;

use answer::answer;

/// What the simulator does with one risk request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Reply {
        body: String,
        errcode: i64,
        inner: Option<i64>,
    },
    HttpError(u16),
    /// The connection closes before the answer is complete.
    Drop,
    /// 200 with a body that is not WeChat's JSON.
    Malformed(u64),
}

/// A uniform number in [0, 1) from the seed, the request number and a salt.
fn draw(seed: u64, n: u64, salt: &str) -> f64 {
    let r = fnv1a(&[&seed.to_le_bytes(), &n.to_le_bytes(), salt.as_bytes()]);
    (r >> 11) as f64 / (1u64 << 53) as f64
}

fn choose_fault(rates: &FaultRates, seed: u64, n: u64) -> Option<Fault> {
    let r = draw(seed, n, "fault");
    let mut edge = 0.0;
    let pick = |edge: &mut f64, rate: f64| {
        *edge += rate;
        r < *edge
    };
    if pick(&mut edge, rates.busy) {
        Some(Fault::Busy)
    } else if pick(&mut edge, rates.inner_error) {
        const CODES: [i64; 6] = [4, 5, 6, 7, 8, 10];
        Some(Fault::InnerError(CODES[(n % 6) as usize]))
    } else if pick(&mut edge, rates.http_error) {
        Some(Fault::HttpError(if n.is_multiple_of(2) {
            502
        } else {
            503
        }))
    } else if pick(&mut edge, rates.drop) {
        Some(Fault::Drop)
    } else if pick(&mut edge, rates.malformed) {
        Some(Fault::Malformed)
    } else {
        None
    }
}

/// An openid that asks for its own answer: `errcode<N>_…` or `code<N>_…`.
/// The largest risk request body the simulator takes; beyond it, HTTP 413
/// (WeChat's own limit is not documented; its gateways refuse large bodies).
const MAX_RISK_BODY: usize = 1 << 20;

/// The HTTP status asked for by an openid like `http404_x`.
fn requested_http_status(openid: &str) -> Option<u16> {
    let (number, _) = openid.strip_prefix("http")?.split_once('_')?;
    number.parse().ok().filter(|s| (400..600).contains(s))
}

fn requested_answer(openid: &str) -> Option<(bool, i64)> {
    let (outer, rest) = match openid.strip_prefix("errcode") {
        Some(rest) => (true, rest),
        None => (false, openid.strip_prefix("code")?),
    };
    let (number, _) = rest.split_once('_')?;
    Some((outer, number.parse().ok()?))
}

#[derive(Default)]
struct Stats {
    risk_requests: u64,
    by_path: BTreeMap<String, u64>,
    by_api: BTreeMap<String, u64>,
    errcodes: BTreeMap<i64, u64>,
    inner_codes: BTreeMap<i64, u64>,
    token_fetches: BTreeMap<&'static str, u64>,
    /// Sends of each distinct request (api + data, without client_msg_id).
    /// Both maps get an entry per request: hashed with foldhash, not SipHash.
    per_request: HashMap<u64, u32, foldhash::fast::RandomState>,
    per_openid: HashMap<String, u32, foldhash::fast::RandomState>,
    /// Arrival times of risk requests within the last second.
    window: VecDeque<Instant>,
    max_in_1s: u64,
    /// Risk requests per second since the first one (second 0), for pacing measurements.
    first_arrival: Option<Instant>,
    per_second: Vec<u64>,
    last_arrival: Option<Instant>,
    faults: BTreeMap<&'static str, u64>,
    quota_used: u64,
    balance_left: Option<u64>,
    tokens_revoked: bool,
}

/// The JSON of `GET /_sim/stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SimStats {
    pub risk_requests: u64,
    pub by_path: BTreeMap<String, u64>,
    pub by_api: BTreeMap<String, u64>,
    pub errcodes: BTreeMap<String, u64>,
    pub inner_codes: BTreeMap<String, u64>,
    pub token_fetches: BTreeMap<String, u64>,
    pub distinct_requests: u64,
    pub max_sends_per_request: u32,
    pub max_requests_in_1s: u64,
    /// Seconds from the first risk request to the last.
    #[serde(default)]
    pub span_seconds: f64,
    /// Risk requests in each second since the first one; only with `?seconds=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<Vec<u64>>,
    /// Injected faults by kind: busy, inner_error, http_error, drop, malformed, slow, tokens_expired.
    #[serde(default)]
    pub faults: BTreeMap<String, u64>,
    /// Risk calls counted against `daily_quota` today.
    #[serde(default)]
    pub quota_used: u64,
    /// Paid answers left when `balance` is set.
    #[serde(default)]
    pub balance_left: Option<u64>,
    /// Only with `?openids=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_openid: Option<BTreeMap<String, u32>>,
}

/// A running simulator.
pub struct SimHandle {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the simulator on `listen` (e.g. `127.0.0.1:0`) in the current tokio runtime.
pub async fn start(config: SimConfig, listen: &str) -> Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the simulator to {listen}"))?;
    let addr = listener.local_addr()?;
    let sim = Arc::new(Sim::new(config));
    let app = Router::new()
        .route("/cgi-bin/token", get(token))
        .route("/cgi-bin/stable_token", post(stable_token))
        .route("/wxa/servicemarket", post(servicemarket))
        .route("/tcb/servicemarket", post(servicemarket))
        .route(rank::PATH, post(servicemarket))
        .route("/_sim/stats", get(stats))
        .route("/_sim/new_day", post(new_day))
        .route("/_sim/top_up", post(top_up))
        // Larger bodies reach the handler, which counts them before refusing.
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(sim);
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!("simulator stopped: {err}");
        }
    });
    Ok(SimHandle { addr, task })
}

fn json_reply(value: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error(errcode: i64, errmsg: &str) -> Value {
    json!({"errcode": errcode, "errmsg": format!("{errmsg} rid: sim")})
}

impl Sim {
    fn count_token(&self, endpoint: &'static str) {
        *self.lock_stats().token_fetches.entry(endpoint).or_default() += 1;
    }

    fn count_fault(&self, kind: &'static str) {
        *self.lock_stats().faults.entry(kind).or_default() += 1;
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks appid and secret as WeChat does, most specific error first.
    fn check_credentials(
        &self,
        grant_type: Option<&str>,
        appid: Option<&str>,
        secret: Option<&str>,
    ) -> Option<Value> {
        if grant_type != Some("client_credential") {
            return Some(error(40002, "invalid grant_type"));
        }
        let appid = appid.unwrap_or_default();
        let secret = secret.unwrap_or_default();
        if appid.is_empty() {
            return Some(error(41002, "appid missing"));
        }
        if self.config.appid.as_deref().is_some_and(|a| a != appid) {
            return Some(error(40013, "invalid appid"));
        }
        if secret.is_empty() {
            return Some(error(41004, "appsecret missing"));
        }
        if self.config.secret.as_deref().is_some_and(|s| s != secret) {
            return Some(error(40125, "invalid appsecret"));
        }
        None
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
}

async fn token(State(sim): State<Arc<Sim>>, Query(q): Query<TokenQuery>) -> Response {
    sim.count_token("token");
    if let Some(err) = sim.check_credentials(
        q.grant_type.as_deref(),
        q.appid.as_deref(),
        q.secret.as_deref(),
    ) {
        return json_reply(err);
    }
    let (access_token, expires_in) = sim
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .client_credential(Instant::now());
    json_reply(json!({"access_token": access_token, "expires_in": expires_in}))
}

#[derive(Deserialize)]
struct StableTokenBody {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    force_refresh: bool,
}

async fn stable_token(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<StableTokenBody>(&body) else {
        sim.count_token("stable_token");
        return json_reply(error(47001, "data format error"));
    };
    sim.count_token(if body.force_refresh {
        "stable_token_forced"
    } else {
        "stable_token"
    });
    if let Some(err) = sim.check_credentials(
        body.grant_type.as_deref(),
        body.appid.as_deref(),
        body.secret.as_deref(),
    ) {
        return json_reply(err);
    }
    let (access_token, expires_in) = sim
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .stable(Instant::now(), body.force_refresh);
    json_reply(json!({"access_token": access_token, "expires_in": expires_in}))
}

#[derive(Deserialize)]
struct RiskQuery {
    access_token: Option<String>,
}

async fn servicemarket(
    State(sim): State<Arc<Sim>>,
    uri: axum::http::Uri,
    Query(q): Query<RiskQuery>,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let n = sim.counter.fetch_add(1, Ordering::Relaxed);
    let limited = sim.arrive(uri.path(), arrived);
    if body.len() > MAX_RISK_BODY {
        return render(&sim, Outcome::HttpError(413));
    }
    let mut delay = sim.config.latency + spread(sim.config.latency_spread, sim.config.seed, n);
    // One fault at most per request, so that every fault costs exactly one retry.
    let slow = !limited && draw(sim.config.seed, n, "slow") < sim.rates.slow;
    if slow {
        sim.count_fault("slow");
        delay += sim.config.slow_delay;
    }
    if !delay.is_zero() {
        // tokio's timer fires on millisecond ticks, on average about 1.5 ms
        // late; aiming early keeps the mean latency what was configured.
        let aim = delay.saturating_sub(TIMER_LATENESS);
        tokio::time::sleep_until(tokio::time::Instant::from_std(arrived) + aim).await;
    }
    // The answer is decided when it is sent, so a token invalidated while
    // requests are in flight fails all of them, as it does at WeChat.
    let outcome = if limited {
        outcome_error(45011, "api minute-quota reach limit")
    } else {
        let fault = if slow {
            None
        } else {
            choose_fault(&sim.rates, sim.config.seed, n)
        };
        answer(
            &sim,
            uri.path(),
            q.access_token.as_deref(),
            &body,
            Instant::now(),
            n,
            fault,
        )
    };
    render(&sim, outcome)
}

fn render(sim: &Sim, outcome: Outcome) -> Response {
    match outcome {
        Outcome::Reply {
            body,
            errcode,
            inner,
        } => {
            {
                let mut stats = sim.lock_stats();
                *stats.errcodes.entry(errcode).or_default() += 1;
                if let Some(code) = inner {
                    *stats.inner_codes.entry(code).or_default() += 1;
                }
            }
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Outcome::HttpError(status) => {
            let status = axum::http::StatusCode::from_u16(status)
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            let page = format!(
                "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center><hr><center>sim</center></body></html>"
            );
            (status, [(header::CONTENT_TYPE, "text/html")], page).into_response()
        }
        Outcome::Drop => {
            let broken = futures_util::stream::iter([Err::<Bytes, std::io::Error>(
                std::io::Error::other("simulated dropped connection"),
            )]);
            (
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(broken),
            )
                .into_response()
        }
        Outcome::Malformed(n) => {
            let body = if n.is_multiple_of(2) {
                r#"{"errcode":0,"errmsg":"ok","data":"{\"code\":0,\"msg\":"#.to_string()
            } else {
                "<html><body>系统繁忙，请稍后再试</body></html>".to_string()
            };
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

impl Sim {
    /// Counts an arriving risk request; true if it is beyond the rate limit.
    fn arrive(&self, path: &str, now: Instant) -> bool {
        let mut stats = self.lock_stats();
        stats.risk_requests += 1;
        match stats.by_path.get_mut(path) {
            Some(count) => *count += 1,
            None => {
                stats.by_path.insert(path.to_string(), 1);
            }
        }
        while stats
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            stats.window.pop_front();
        }
        stats.window.push_back(now);
        stats.max_in_1s = stats.max_in_1s.max(stats.window.len() as u64);
        let first = *stats.first_arrival.get_or_insert(now);
        let second = now.duration_since(first).as_secs() as usize;
        // Bounded: a simulator left running for days keeps its first day.
        if second < 86_400 {
            if stats.per_second.len() <= second {
                stats.per_second.resize(second + 1, 0);
            }
            stats.per_second[second] += 1;
        }
        stats.last_arrival = Some(now);
        self.config
            .rate_limit
            .is_some_and(|limit| stats.window.len() as u64 > u64::from(limit))
    }
}

fn spread(max: Duration, seed: u64, n: u64) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let r = fnv1a(&[&seed.to_le_bytes(), &n.to_le_bytes()]);
    max.mul_f64((r % 10_000) as f64 / 10_000.0)
}

/// An outer error reply.
fn outcome_error(errcode: i64, errmsg: &str) -> Outcome {
    Outcome::Reply {
        body: error(errcode, errmsg).to_string(),
        errcode,
        inner: None,
    }
}

/// A delivered reply: outer errcode 0 and the service's answer as a JSON string.
/// The answer a transient fault gives, counted by kind.
fn fault_outcome(sim: &Sim, fault: Fault, n: u64) -> Outcome {
    match fault {
        Fault::Busy => {
            sim.count_fault("busy");
            outcome_error(-1, "system error")
        }
        Fault::InnerError(code) => {
            sim.count_fault("inner_error");
            inner_reply(n, code, "内部服务错误", None)
        }
        Fault::HttpError(status) => {
            sim.count_fault("http_error");
            Outcome::HttpError(status)
        }
        Fault::Drop => {
            sim.count_fault("drop");
            Outcome::Drop
        }
        Fault::Malformed => {
            sim.count_fault("malformed");
            Outcome::Malformed(n)
        }
    }
}

fn inner_reply(n: u64, code: i64, msg: &str, level: Option<u8>) -> Outcome {
    // Written out rather than built as a `json!` tree: this runs for every
    // request, and the tree's maps and strings were a tenth of the handler.
    let msg = Value::String(msg.to_string());
    let inner = match level {
        Some(level) => format!(r#"{{"code":{code},"data":{{"risklevel":{level}}},"msg":{msg}}}"#),
        None => format!(r#"{{"code":{code},"msg":{msg}}}"#),
    };
    let request_id = format!(
        "sim-{n:010}-{:016x}",
        fnv1a(&[inner.as_bytes(), &n.to_le_bytes()])
    );
    let reply = format!(
        r#"{{"errcode":0,"errmsg":"ok","data":{},"request_id":"{request_id}","provider_errmsg":""}}"#,
        Value::String(inner)
    );
    Outcome::Reply {
        body: reply,
        errcode: 0,
        inner: Some(code),
    }
}

/// The answer to one risk request that is within the rate limit.
async fn new_day(State(sim): State<Arc<Sim>>) -> Response {
    sim.lock_stats().quota_used = 0;
    json_reply(json!({"errcode": 0, "errmsg": "ok"}))
}

#[derive(Deserialize)]
struct TopUpQuery {
    calls: u64,
}

async fn top_up(State(sim): State<Arc<Sim>>, Query(q): Query<TopUpQuery>) -> Response {
    let mut stats = sim.lock_stats();
    let left = stats.balance_left.unwrap_or(0) + q.calls;
    stats.balance_left = Some(left);
    json_reply(json!({"errcode": 0, "errmsg": "ok", "balance_left": left}))
}

#[derive(Deserialize)]
struct StatsQuery {
    #[serde(default)]
    openids: Option<String>,
    #[serde(default)]
    seconds: Option<String>,
}

async fn stats(State(sim): State<Arc<Sim>>, Query(q): Query<StatsQuery>) -> Response {
    let stats = sim.lock_stats();
    let out = SimStats {
        risk_requests: stats.risk_requests,
        by_path: stats.by_path.clone(),
        by_api: stats.by_api.clone(),
        errcodes: stats
            .errcodes
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        inner_codes: stats
            .inner_codes
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        token_fetches: stats
            .token_fetches
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        distinct_requests: stats.per_request.len() as u64,
        max_sends_per_request: stats.per_request.values().copied().max().unwrap_or(0),
        max_requests_in_1s: stats.max_in_1s,
        span_seconds: match (stats.first_arrival, stats.last_arrival) {
            (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
            _ => 0.0,
        },
        per_second: q.seconds.is_some().then(|| stats.per_second.clone()),
        faults: stats
            .faults
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        quota_used: stats.quota_used,
        balance_left: stats.balance_left,
        per_openid: q.openids.is_some().then(|| {
            stats
                .per_openid
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        }),
    };
    json_reply(serde_json::to_value(out).unwrap_or_default())
}

#[cfg(test)]
mod tests;
