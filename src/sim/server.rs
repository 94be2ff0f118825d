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

use super::SimConfig;
use super::risk::{fnv1a, level};
use super::tokens::{Rejection, TokenBook};
use crate::wechat::{RISK_OBJECT_FIELDS, SERVICE, Scene};

/// How late tokio's timer typically fires (millisecond ticks, rounded up).
const TIMER_LATENESS: Duration = Duration::from_micros(1500);

struct Sim {
    config: SimConfig,
    tokens: Mutex<TokenBook>,
    stats: Mutex<Stats>,
    counter: AtomicU64,
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
    per_request: HashMap<u64, u32>,
    per_openid: HashMap<String, u32>,
    /// Arrival times of risk requests within the last second.
    window: VecDeque<Instant>,
    max_in_1s: u64,
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
    let sim = Arc::new(Sim {
        tokens: Mutex::new(TokenBook::new(config.token_ttl, config.token_grace)),
        config,
        stats: Mutex::new(Stats::default()),
        counter: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/cgi-bin/token", get(token))
        .route("/cgi-bin/stable_token", post(stable_token))
        .route("/wxa/servicemarket", post(servicemarket))
        .route("/tcb/servicemarket", post(servicemarket))
        .route("/_sim/stats", get(stats))
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
struct RiskData {
    openid: Option<String>,
    serviceid: Option<i64>,
    sale_risk: Option<BTreeMap<String, String>>,
    login_risk: Option<BTreeMap<String, String>>,
    user_access_token: Option<String>,
}

async fn servicemarket(
    State(sim): State<Arc<Sim>>,
    uri: axum::http::Uri,
    Query(q): Query<RiskQuery>,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    let n = sim.counter.fetch_add(1, Ordering::Relaxed);
    let (reply, errcode, inner) =
        answer(&sim, uri.path(), q.access_token.as_deref(), &body, now, n);
    {
        let mut stats = sim.lock_stats();
        *stats.errcodes.entry(errcode).or_default() += 1;
        if let Some(code) = inner {
            *stats.inner_codes.entry(code).or_default() += 1;
        }
    }
    let delay = sim.config.latency + spread(sim.config.latency_spread, sim.config.seed, n);
    if !delay.is_zero() {
        // tokio's timer fires on millisecond ticks, on average about 1.5 ms
        // late; aiming early keeps the mean latency what was configured.
        let aim = delay.saturating_sub(TIMER_LATENESS);
        tokio::time::sleep_until(tokio::time::Instant::from_std(now) + aim).await;
    }
    ([(header::CONTENT_TYPE, "application/json")], reply).into_response()
}

fn spread(max: Duration, seed: u64, n: u64) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let r = fnv1a(&[&seed.to_le_bytes(), &n.to_le_bytes()]);
    max.mul_f64((r % 10_000) as f64 / 10_000.0)
}

/// An outer error reply.
fn outer_error(errcode: i64, errmsg: &str) -> (String, i64, Option<i64>) {
    (error(errcode, errmsg).to_string(), errcode, None)
}

/// A delivered reply: outer errcode 0 and the service's answer as a JSON string.
fn inner_reply(n: u64, code: i64, msg: &str, level: Option<u8>) -> (String, i64, Option<i64>) {
    let inner = match level {
        Some(level) => json!({"code": code, "msg": msg, "data": {"risklevel": level}}),
        None => json!({"code": code, "msg": msg}),
    }
    .to_string();
    let request_id = format!(
        "sim-{n:010}-{:016x}",
        fnv1a(&[inner.as_bytes(), &n.to_le_bytes()])
    );
    let reply = format!(
        r#"{{"errcode":0,"errmsg":"ok","data":{},"request_id":"{request_id}","provider_errmsg":""}}"#,
        Value::String(inner)
    );
    (reply, 0, Some(code))
}

/// The reply to one risk request, its outer errcode and inner code.
fn answer(
    sim: &Sim,
    path: &str,
    access_token: Option<&str>,
    body: &[u8],
    now: Instant,
    n: u64,
) -> (String, i64, Option<i64>) {
    // Every request counts against the frequency limit, answered or not.
    {
        let mut stats = sim.lock_stats();
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
        if sim
            .config
            .rate_limit
            .is_some_and(|limit| stats.window.len() as u64 > u64::from(limit))
        {
            return outer_error(45011, "api minute-quota reach limit");
        }
    }
    let Some(access_token) = access_token.filter(|t| !t.is_empty()) else {
        return outer_error(41001, "access_token missing");
    };
    let checked = sim
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(access_token, now);
    match checked {
        Err(Rejection::Invalid) => {
            return outer_error(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
        Err(Rejection::Expired) => return outer_error(42001, "access_token expired"),
        Ok(()) => {}
    }
    let Ok(body) = serde_json::from_slice::<RiskBody<'_>>(body) else {
        return outer_error(47001, "data format error");
    };
    if body.service.as_deref() != Some(SERVICE) {
        return outer_error(9301001, "invalid service");
    }
    let scene = match body.api.as_deref() {
        Some(api) if api == Scene::Marketing.api() => Scene::Marketing,
        Some(api) if api == Scene::Account.api() => Scene::Account,
        _ => return outer_error(9301001, "invalid api"),
    };
    let raw = body.data.map(|d| d.get().trim_start()).unwrap_or("");
    if raw.starts_with('"') {
        // The seed's table calls data a string; sent as one it fails like this.
        return outer_error(9301003, "service internal error");
    }
    if !raw.starts_with('{') {
        return outer_error(47001, "data format error");
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
        .find(|k| !RISK_OBJECT_FIELDS.contains(&k.as_str()))
    {
        return inner_reply(n, 1, &format!("data 内参数错误: {name}"), None);
    }
    let fields: Vec<(&str, &str)> = object
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
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
        *stats.by_api.entry(scene.api().to_string()).or_default() += 1;
        *stats.per_request.entry(key).or_default() += 1;
        match stats.per_openid.get_mut(&openid) {
            Some(count) => *count += 1,
            None => {
                stats.per_openid.insert(openid.clone(), 1);
            }
        }
    }
    inner_reply(n, 0, "请求成功", Some(level(scene.api(), &openid, &fields)))
}

#[derive(Deserialize)]
struct StatsQuery {
    #[serde(default)]
    openids: Option<String>,
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

    fn sim() -> (Sim, String) {
        let sim = Sim {
            tokens: Mutex::new(TokenBook::new(
                Duration::from_secs(7200),
                Duration::from_secs(300),
            )),
            config: SimConfig::default(),
            stats: Mutex::new(Stats::default()),
            counter: AtomicU64::new(0),
        };
        let token = sim.tokens.lock().unwrap().stable(Instant::now(), false).0;
        (sim, token)
    }

    fn ask(sim: &Sim, token: &str, body: Value) -> (i64, Option<i64>, Value) {
        let (reply, errcode, code) = answer(
            sim,
            "/wxa/servicemarket",
            Some(token),
            body.to_string().as_bytes(),
            Instant::now(),
            1,
        );
        (errcode, code, serde_json::from_str(&reply).unwrap())
    }

    fn body(api: &str, data: Value) -> Value {
        json!({"service": SERVICE, "api": api, "data": data, "client_msg_id": "m"})
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
        let (_, errcode, _) = answer(
            &sim,
            "/wxa/servicemarket",
            Some(&token),
            b"{not json",
            Instant::now(),
            2,
        );
        assert_eq!(errcode, 47001);
        let (_, errcode, _) = answer(
            &sim,
            "/wxa/servicemarket",
            Some(&token),
            b"{}",
            Instant::now() + Duration::from_secs(8000),
            3,
        );
        assert_eq!(errcode, 42001);
    }

    #[test]
    fn rate_limit_answers_45011_beyond_the_window() {
        let (mut sim, token) = sim();
        sim.config.rate_limit = Some(3);
        let now = Instant::now();
        let good = body(
            "weopensecriskservice",
            json!({"openid": "o1", "serviceid": 3, "sale_risk": {}}),
        )
        .to_string();
        let codes: Vec<i64> = (0..5)
            .map(|i| {
                answer(
                    &sim,
                    "/wxa/servicemarket",
                    Some(&token),
                    good.as_bytes(),
                    now,
                    i,
                )
                .1
            })
            .collect();
        assert_eq!(codes, [0, 0, 0, 45011, 45011]);
        let later = answer(
            &sim,
            "/wxa/servicemarket",
            Some(&token),
            good.as_bytes(),
            now + Duration::from_millis(1001),
            9,
        )
        .1;
        assert_eq!(later, 0);
        assert_eq!(sim.stats.lock().unwrap().max_in_1s, 5);
    }
}
