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

mod rank;

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

#[derive(Deserialize)]
struct RiskBody<'a> {
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    #[serde(borrow)]
    api: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// `data` as the risk service reads it; a value of the wrong type anywhere
/// inside is the service's parameter error (inner code 1).
#[derive(Deserialize)]
struct RiskData<'a> {
    #[serde(borrow)]
    openid: Option<Cow<'a, str>>,
    serviceid: Option<i64>,
    #[serde(borrow)]
    sale_risk: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(borrow)]
    login_risk: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(borrow)]
    user_access_token: Option<Cow<'a, str>>,
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
#[allow(clippy::too_many_arguments)]
fn answer(
    sim: &Sim,
    path: &str,
    access_token: Option<&str>,
    body: &[u8],
    now: Instant,
    n: u64,
    fault: Option<Fault>,
) -> Outcome {
    if let Some(after) = sim.config.expire_tokens_after {
        let mut stats = sim.lock_stats();
        if !stats.tokens_revoked && stats.risk_requests >= after {
            stats.tokens_revoked = true;
            *stats.faults.entry("tokens_expired").or_default() += 1;
            drop(stats);
            sim.tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .revoke_all();
        }
    }
    let Some(access_token) = access_token.filter(|t| !t.is_empty()) else {
        return outcome_error(41001, "access_token missing");
    };
    let checked = sim
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(access_token, now);
    match checked {
        Err(Rejection::Invalid) => {
            return outcome_error(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
        Err(Rejection::Expired) => return outcome_error(42001, "access_token expired"),
        Err(Rejection::Revoked) => {
            let errcode = sim.config.expired_token_errcode;
            let errmsg = match errcode {
                42001 => "access_token expired",
                40014 => "invalid access_token",
                _ => "invalid credential, access_token is invalid or not latest",
            };
            return outcome_error(errcode, errmsg);
        }
        Ok(()) => {}
    }
    if path == rank::PATH {
        return rank::answer(sim, body, n, fault);
    }
    let Ok(body) = serde_json::from_slice::<RiskBody<'_>>(body) else {
        return outcome_error(47001, "data format error");
    };
    if body.service.as_deref() != Some(SERVICE) {
        return outcome_error(9301001, "invalid service");
    }
    let scene = match body.api.as_deref() {
        Some(api) if api == Scene::Marketing.api() => Scene::Marketing,
        Some(api) if api == Scene::Account.api() => Scene::Account,
        _ => return outcome_error(9301001, "invalid api"),
    };
    let raw = body.data.map(|d| d.get().trim_start()).unwrap_or("");
    if raw.starts_with('"') {
        // The seed's table calls data a string; sent as one it fails like this.
        return outcome_error(9301003, "service internal error");
    }
    if !raw.starts_with('{') {
        return outcome_error(47001, "data format error");
    }
    let Ok(data) = serde_json::from_str::<RiskData>(raw) else {
        return inner_reply(n, 1, "data 内参数错误", None);
    };
    let Some(openid) = data.openid.filter(|o| !o.is_empty()) else {
        return inner_reply(n, 1, "data 内参数错误: openid", None);
    };
    if data.serviceid != Some(i64::from(scene.serviceid())) {
        return inner_reply(n, 9, "serviceid 参数错误", None);
    }
    let object = match scene {
        Scene::Marketing => data.sale_risk,
        Scene::Account => data.login_risk,
        Scene::Rank(_) => None,
    };
    let Some(object) = object else {
        return inner_reply(
            n,
            1,
            &format!("data 内参数错误: {} 不可省略", scene.object()),
            None,
        );
    };
    if let Some(name) = object
        .keys()
        .find(|k| !RISK_OBJECT_FIELDS.contains(&k.as_ref()))
    {
        return inner_reply(n, 1, &format!("data 内参数错误: {name}"), None);
    }
    let fields: Vec<(&str, &str)> = object
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    {
        let mut parts: Vec<&[u8]> = vec![scene.api().as_bytes(), openid.as_bytes()];
        for (name, value) in &fields {
            parts.push(name.as_bytes());
            parts.push(value.as_bytes());
        }
        parts.push(data.user_access_token.as_deref().unwrap_or("").as_bytes());
        let key = fnv1a(&parts);
        let mut stats = sim.lock_stats();
        match stats.by_api.get_mut(scene.api()) {
            Some(count) => *count += 1,
            None => {
                stats.by_api.insert(scene.api().to_string(), 1);
            }
        }
        *stats.per_request.entry(key).or_default() += 1;
        match stats.per_openid.get_mut(openid.as_ref()) {
            Some(count) => *count += 1,
            None => {
                stats.per_openid.insert(openid.to_string(), 1);
            }
        }
    }
    match fault {
        None => {}
        Some(Fault::Busy) => {
            sim.count_fault("busy");
            return outcome_error(-1, "system error");
        }
        Some(Fault::InnerError(code)) => {
            sim.count_fault("inner_error");
            return inner_reply(n, code, "内部服务错误", None);
        }
        Some(Fault::HttpError(status)) => {
            sim.count_fault("http_error");
            return Outcome::HttpError(status);
        }
        Some(Fault::Drop) => {
            sim.count_fault("drop");
            return Outcome::Drop;
        }
        Some(Fault::Malformed) => {
            sim.count_fault("malformed");
            return Outcome::Malformed(n);
        }
    }
    if let Some(quota) = sim.config.daily_quota {
        let mut stats = sim.lock_stats();
        if stats.quota_used >= quota {
            return outcome_error(45009, "reach max api daily quota limit");
        }
        stats.quota_used += 1;
    }
    if let Some(status) = requested_http_status(&openid) {
        return Outcome::HttpError(status);
    }
    match requested_answer(&openid) {
        Some((true, errcode)) if errcode != 0 => {
            return outcome_error(errcode, &format!("sim: errcode {errcode} for this openid"));
        }
        Some((false, code)) if code != 0 => {
            return inner_reply(n, code, &format!("sim: code {code} for this openid"), None);
        }
        _ => {}
    }
    {
        let mut stats = sim.lock_stats();
        match &mut stats.balance_left {
            Some(0) => return inner_reply(n, 13, "余额不足", None),
            Some(left) => *left -= 1,
            None => {}
        }
    }
    inner_reply(n, 0, "请求成功", Some(level(scene.api(), &openid, &fields)))
}

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
mod tests {
    use super::*;

    fn sim_with(config: SimConfig) -> (Sim, String) {
        let sim = Sim::new(config);
        let token = sim.tokens.lock().unwrap().stable(Instant::now(), false).0;
        (sim, token)
    }

    fn sim() -> (Sim, String) {
        sim_with(SimConfig::default())
    }

    fn codes(outcome: &Outcome) -> (i64, Option<i64>) {
        match outcome {
            Outcome::Reply { errcode, inner, .. } => (*errcode, *inner),
            other => panic!("not a reply: {other:?}"),
        }
    }

    fn ask_raw(sim: &Sim, token: &str, body: &[u8], at: Instant) -> Outcome {
        answer(sim, "/wxa/servicemarket", Some(token), body, at, 1, None)
    }

    fn ask(sim: &Sim, token: &str, body: Value) -> (i64, Option<i64>, Value) {
        let outcome = ask_raw(sim, token, body.to_string().as_bytes(), Instant::now());
        let (errcode, code) = codes(&outcome);
        let Outcome::Reply { body, .. } = outcome else {
            unreachable!()
        };
        (errcode, code, serde_json::from_str(&body).unwrap())
    }

    fn body(api: &str, data: Value) -> Value {
        json!({"service": SERVICE, "api": api, "data": data, "client_msg_id": "m"})
    }

    fn marketing(openid: &str) -> Value {
        body(
            "weopensecriskservice",
            json!({"openid": openid, "serviceid": 3, "sale_risk": {}}),
        )
    }

    #[test]
    fn validates_requests_like_wechat() {
        let (sim, token) = sim();
        let good = json!({"openid": "o1", "serviceid": 3, "sale_risk": {"deviceid": "d"}});
        let (errcode, code, reply) = ask(&sim, &token, body("weopensecriskservice", good.clone()));
        assert_eq!((errcode, code), (0, Some(0)));
        let inner: Value = serde_json::from_str(reply["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            inner["data"]["risklevel"],
            level("weopensecriskservice", "o1", &[("deviceid", "d")])
        );
        assert!(reply["request_id"].as_str().unwrap().starts_with("sim-"));

        let cases = [
            (
                json!({"service": "wx000", "api": "weopensecriskservice", "data": good}),
                9301001,
                None,
            ),
            (body("nosuchapi", good.clone()), 9301001, None),
            (
                body("weopensecriskservice", Value::String(good.to_string())),
                9301003,
                None,
            ),
            (body("weopensecuseracctrisklevel", good.clone()), 0, Some(9)),
            (
                body(
                    "weopensecriskservice",
                    json!({"openid": "o1", "serviceid": 3}),
                ),
                0,
                Some(1),
            ),
            (
                body(
                    "weopensecriskservice",
                    json!({"serviceid": 3, "sale_risk": {}}),
                ),
                0,
                Some(1),
            ),
            (
                body(
                    "weopensecriskservice",
                    json!({"openid": "o1", "serviceid": 3, "sale_risk": {"phonenum": null}}),
                ),
                0,
                Some(1),
            ),
        ];
        for (request, errcode, code) in cases {
            let (got_errcode, got_code, _) = ask(&sim, &token, request.clone());
            assert_eq!((got_errcode, got_code), (errcode, code), "{request}");
        }
        let (errcode, _, _) = ask(&sim, "not-a-token", body("weopensecriskservice", good));
        assert_eq!(errcode, 40001);
        let outcome = ask_raw(&sim, &token, b"{not json", Instant::now());
        assert_eq!(codes(&outcome).0, 47001);
        let later = Instant::now() + Duration::from_secs(8000);
        assert_eq!(codes(&ask_raw(&sim, &token, b"{}", later)).0, 42001);
    }

    #[test]
    fn rate_limit_counts_arrivals_in_a_sliding_second() {
        let (mut sim, _) = sim();
        sim.config.rate_limit = Some(3);
        let now = Instant::now();
        let limited: Vec<bool> = (0..5)
            .map(|_| sim.arrive("/wxa/servicemarket", now))
            .collect();
        assert_eq!(limited, [false, false, false, true, true]);
        assert!(!sim.arrive("/wxa/servicemarket", now + Duration::from_millis(1001)));
        assert_eq!(sim.stats.lock().unwrap().max_in_1s, 5);
    }

    #[test]
    fn openid_prefixes_choose_the_answer() {
        let (sim, token) = sim();
        let cases = [
            ("errcode61010_a", (61010, None)),
            ("errcode-1_a", (-1, None)),
            ("errcode48001_a", (48001, None)),
            ("code2_a", (0, Some(2))),
            ("code12_a", (0, Some(12))),
            ("errcode_nonumber", (0, Some(0))),
            ("ocode2_a", (0, Some(0))),
        ];
        for (openid, expected) in cases {
            let (errcode, code, _) = ask(&sim, &token, marketing(openid));
            assert_eq!((errcode, code), expected, "{openid}");
        }
    }

    #[test]
    fn quota_and_balance_run_out() {
        let (sim, token) = sim_with(SimConfig {
            daily_quota: Some(3),
            balance: Some(2),
            ..SimConfig::default()
        });
        let answers: Vec<_> = (0..4)
            .map(|i| {
                let (errcode, code, _) = ask(&sim, &token, marketing(&format!("o{i}")));
                (errcode, code)
            })
            .collect();
        assert_eq!(
            answers,
            [(0, Some(0)), (0, Some(0)), (0, Some(13)), (45009, None)]
        );
    }

    #[test]
    fn faults_come_at_their_rates() {
        let config = SimConfig {
            faults: 0.1,
            seed: 7,
            ..SimConfig::default()
        };
        let rates = config.fault_rates();
        let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
        let mut slow = 0;
        for n in 0..100_000 {
            let kind = match choose_fault(&rates, config.seed, n) {
                None => "none",
                Some(Fault::Busy) => "busy",
                Some(Fault::InnerError(_)) => "inner",
                Some(Fault::HttpError(_)) => "http",
                Some(Fault::Drop) => "drop",
                Some(Fault::Malformed) => "malformed",
            };
            *seen.entry(kind).or_default() += 1;
            if draw(config.seed, n, "slow") < rates.slow {
                slow += 1;
            }
        }
        for kind in ["busy", "inner", "http", "drop", "malformed"] {
            let count = seen[kind];
            assert!((9_000..11_000).contains(&count), "{kind}: {count}");
        }
        assert!((9_000..11_000).contains(&slow), "slow: {slow}");
    }

    #[test]
    fn expired_tokens_fail_requests_in_flight() {
        let (sim, token) = sim_with(SimConfig {
            expire_tokens_after: Some(1),
            expired_token_errcode: 40014,
            ..SimConfig::default()
        });
        sim.arrive("/wxa/servicemarket", Instant::now());
        let (errcode, _, _) = ask(&sim, &token, marketing("o1"));
        assert_eq!(errcode, 40014);
        let fresh = sim.tokens.lock().unwrap().stable(Instant::now(), false).0;
        assert_ne!(fresh, token);
        assert_eq!(ask(&sim, &fresh, marketing("o1")).0, 0);
    }
}
