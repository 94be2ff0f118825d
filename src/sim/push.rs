//! The simulator's side of message push: verdicts of the feedback service
//! sent to a `riskbatch receive` URL, in plain, compatible or safe mode, as
//! JSON or XML, at a rate, as WeChat would push them. It reports how many
//! were answered `success` and the answer times.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::pacer::Pacer;
use crate::receive::crypto::{AesKey, signature};
use crate::wechat::transport::{Transport, split_url};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PushMode {
    Plain,
    Compatible,
    Safe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PushFormat {
    Json,
    Xml,
}

/// What to push and where.
pub struct PushPlan {
    pub url: String,
    pub count: u64,
    pub rate: u32,
    pub concurrency: usize,
    pub mode: PushMode,
    pub format: PushFormat,
    pub token: String,
    pub aes_key: Option<AesKey>,
    pub appid: String,
    /// Verdicts are about openids `<prefix>000000`, `<prefix>000001`, …
    pub openid_prefix: String,
}

#[derive(Debug, Serialize)]
pub struct PushReport {
    pub pushed: u64,
    pub success: u64,
    pub refused: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One verdict message, in the plan's format, before any envelope.
fn verdict(plan: &PushPlan, i: u64, run: u64) -> String {
    let openid = format!("{}{i:06}", plan.openid_prefix);
    let global_no = format!("{run}{i:08}");
    let level = i % 4;
    let created = crate::clock::now_ms() / 1000;
    match plan.format {
        PushFormat::Json => format!(
            r#"{{"ToUserName":"gh_sim","FromUserName":"{openid}","CreateTime":{created},"MsgType":"event","Event":"risk_feedback","querykey":"{openid}","global_no":"{global_no}","risklevel":{level},"riskmsg":"punished","risktags":""}}"#
        ),
        PushFormat::Xml => format!(
            "<xml><ToUserName><![CDATA[gh_sim]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
             <CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[risk_feedback]]></Event>\
             <querykey><![CDATA[{openid}]]></querykey><global_no>{global_no}</global_no><risklevel>{level}</risklevel>\
             <riskmsg><![CDATA[punished]]></riskmsg><risktags><![CDATA[]]></risktags></xml>"
        ),
    }
}

/// The request for verdict `i`: its URL and body.
fn request(plan: &PushPlan, i: u64, run: u64) -> Result<(String, String), String> {
    let message = verdict(plan, i, run);
    let timestamp = (crate::clock::now_ms() / 1000).to_string();
    let nonce = (run.wrapping_mul(31).wrapping_add(i) % 1_000_000_000).to_string();
    let plain_sig = signature(&[&plan.token, &timestamp, &nonce]);
    let base = format!(
        "{}?signature={plain_sig}&timestamp={timestamp}&nonce={nonce}",
        plan.url
    );
    if plan.mode == PushMode::Plain {
        return Ok((base, message));
    }
    let key = plan
        .aes_key
        .as_ref()
        .ok_or("compatible and safe mode need --push-aes-key")?;
    let random: [u8; 16] = std::array::from_fn(|b| (i as u8).wrapping_mul(7).wrapping_add(b as u8));
    let encrypted = key.encrypt(&message, &plan.appid, random);
    let msg_sig = signature(&[&plan.token, &timestamp, &nonce, &encrypted]);
    let url = format!("{base}&encrypt_type=aes&msg_signature={msg_sig}");
    let body = match (plan.mode, plan.format) {
        (PushMode::Safe, PushFormat::Json) => {
            format!(r#"{{"ToUserName":"gh_sim","Encrypt":"{encrypted}"}}"#)
        }
        (PushMode::Safe, PushFormat::Xml) => format!(
            "<xml><ToUserName><![CDATA[gh_sim]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        ),
        // Compatible mode: the plain fields and the envelope side by side.
        (_, PushFormat::Json) => format!(
            "{},\"Encrypt\":\"{encrypted}\"}}",
            message.trim_end_matches('}')
        ),
        (_, PushFormat::Xml) => message.replace(
            "</xml>",
            &format!("<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"),
        ),
    };
    Ok((url, body))
}

/// Pushes `plan.count` verdicts and reports how they were answered.
pub async fn push(plan: PushPlan) -> anyhow::Result<PushReport> {
    let client = Arc::new(Transport::new(&plan.url, Duration::from_secs(5))?);
    let run = crate::clock::now_ms() as u64 % 1_000_000;
    let plan = Arc::new(plan);
    let pacer = Arc::new(Pacer::new(plan.rate));
    let next = Arc::new(AtomicU64::new(0));
    let success = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency {
        let (client, plan, pacer, next, success) = (
            client.clone(),
            plan.clone(),
            pacer.clone(),
            next.clone(),
            success.clone(),
        );
        workers.spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= plan.count {
                    return times;
                }
                pacer.ready().await;
                let Ok((url, body)) = request(&plan, i, run) else {
                    return times;
                };
                let sent = Instant::now();
                let content_type = match plan.format {
                    PushFormat::Json => "application/json",
                    PushFormat::Xml => "text/xml",
                };
                let answer = client
                    .post(split_url(&url).1, content_type, body.into_bytes())
                    .await;
                let ok = answer.is_ok_and(|exchange| {
                    exchange.status.is_success()
                        && (exchange.body.is_empty() || &exchange.body[..] == b"success")
                });
                times.push(sent.elapsed());
                if ok {
                    success.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let mut times = Vec::new();
    while let Some(done) = workers.join_next().await {
        times.extend(done?);
    }
    let seconds = started.elapsed().as_secs_f64();
    times.sort();
    let at = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let pushed = times.len() as u64;
    let success = success.load(Ordering::Relaxed);
    Ok(PushReport {
        pushed,
        success,
        refused: pushed - success,
        seconds,
        per_second: pushed as f64 / seconds.max(1e-9),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: times.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    })
}
