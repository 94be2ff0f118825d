//! `riskbatch receive`: the URL WeChat's message push calls with the verdicts
//! of the suspicious-account feedback service (SPEC §8, wechat-api.md §5).
//!
//! Every request is checked before anything is stored: its signature (plain
//! mode) or message signature and AES envelope for this appid (compatible and
//! safe mode), its timestamp, its size and its shape. A verdict is answered
//! `success` only once it is on disk in the job's checkpoint store, written
//! by one thread in batched, fsynced transactions; the same `global_no` again
//! is answered `success` and not stored twice. It runs beside `riskbatch run`
//! (SQLite's busy timeout, not the run's lock) and stops on SIGTERM/SIGINT
//! after answering what it has accepted.

pub mod crypto;
pub mod message;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::cli::ReceiveArgs;
use crate::exit::{Exit, usage};
use crate::job::Job;
use crate::state::store::Store;
use crypto::{AesKey, same_signature, signature};
use message::{Fields, Verdict};

/// The largest body accepted; WeChat's messages are a few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// A message whose timestamp is further than this from now is refused:
/// WeChat retries within seconds, so an old one is a replay.
const MAX_SKEW_SECONDS: i64 = 300;
/// Verdicts written in one transaction at most.
const BATCH: usize = 512;

struct Secrets {
    token: String,
    aes_key: Option<AesKey>,
    appid: Option<String>,
}

/// A verdict on its way to the writer, and where its answer goes.
type Pending = (Verdict, tokio::sync::oneshot::Sender<Result<bool, String>>);

struct App {
    secrets: Secrets,
    writer: tokio::sync::mpsc::Sender<Pending>,
}

pub fn execute(args: ReceiveArgs) -> Result<Exit> {
    let job = Job::load(&args.job)?;
    let secrets = secrets(&job)?;
    crate::state::check_folder(&job, true)?;
    let store = Store::open(&job.state_dir)?;
    let (writer, verdicts) = tokio::sync::mpsc::channel::<Pending>(4 * BATCH);
    let writing = std::thread::Builder::new()
        .name("riskbatch-verdicts".into())
        .spawn(move || write_verdicts(store, verdicts))
        .context("starting the verdict writer")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let app = Arc::new(App { secrets, writer });
    runtime.block_on(serve(&args.listen, app, &job))?;
    drop(runtime);
    // The server and its senders are gone: the writer finishes its queue.
    writing.join().ok();
    tracing::info!("stopped; every verdict answered `success` is stored");
    Ok(Exit::Complete)
}

async fn serve(listen: &str, app: Arc<App>, job: &Job) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|err| usage(format!("cannot listen on {listen}: {err}")))?;
    let addr = listener.local_addr()?;
    tracing::info!(job = %job.name, "receiving pushed verdicts on http://{addr}");
    println!("listening on http://{addr}");
    let router = axum::Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")?;
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("signal received: finishing the requests in progress");
}

/// The push token, and for compatible and safe mode the AES key and appid,
/// from the environment variables `[push]` names: never from the job file.
fn secrets(job: &Job) -> Result<Secrets> {
    let push = job.push.as_ref().ok_or_else(|| {
        usage(format!(
            "{} has no [push] section: add token_env (and aes_key_env for safe mode) to receive pushed verdicts",
            job.file.display()
        ))
    })?;
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let token = var(&push.token_env).ok_or_else(|| {
        usage(format!(
            "set {} to the Token of the message-push settings (named by [push] token_env in {})",
            push.token_env,
            job.file.display()
        ))
    })?;
    let aes_key = match var(&push.aes_key_env) {
        None => None,
        Some(key) => {
            Some(AesKey::parse(&key).map_err(|why| usage(format!("{}: {why}", push.aes_key_env)))?)
        }
    };
    let appid = var(&job.api.appid_env);
    if aes_key.is_some() && appid.is_none() {
        return Err(usage(format!(
            "safe mode checks every message's appid: set {} (named by [api] appid_env)",
            job.api.appid_env
        )));
    }
    Ok(Secrets {
        token,
        aes_key,
        appid,
    })
}

/// One thread owns the store: it takes what has queued up, writes it in one
/// transaction and answers each request.
fn write_verdicts(mut store: Store, mut queue: tokio::sync::mpsc::Receiver<Pending>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let verdicts: Vec<Verdict> = batch.iter().map(|(v, _)| v.clone()).collect();
        match store.put_verdicts(&verdicts, crate::clock::now_ms()) {
            Ok(new) => {
                for ((_, answer), new) in batch.into_iter().zip(new) {
                    let _ = answer.send(Ok(new));
                }
            }
            Err(err) => {
                let message = format!("storing verdicts in {}: {err:#}", store.path().display());
                tracing::error!("{message}");
                for (_, answer) in batch {
                    let _ = answer.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Why a request is refused, with its status; logged in one line.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        tracing::warn!(
            status = self.0.as_u16(),
            "refused a push request: {}",
            self.1
        );
        (self.0, self.1).into_response()
    }
}

fn forbidden(why: impl Into<String>) -> Refusal {
    Refusal(StatusCode::FORBIDDEN, why.into())
}

fn malformed(why: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, why.into())
}

async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let param = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
    let (timestamp, nonce) = (param("timestamp"), param("nonce"));
    fresh(timestamp)?;
    let token = app.secrets.token.as_str();
    if method == Method::GET {
        check(&signature(&[token, timestamp, nonce]), param("signature"))?;
        return Ok(param("echostr").to_string().into_response());
    }
    if method != Method::POST {
        return Err(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not a push"),
        ));
    }
    let text = std::str::from_utf8(&body).map_err(|_| malformed("the body is not UTF-8"))?;
    let outer = Fields::parse(text).map_err(malformed)?;
    let fields = match outer.get("Encrypt") {
        Some(encrypted) => {
            check(
                &signature(&[token, timestamp, nonce, encrypted]),
                param("msg_signature"),
            )?;
            let (Some(key), Some(appid)) = (&app.secrets.aes_key, &app.secrets.appid) else {
                return Err(malformed(
                    "an encrypted message, but no EncodingAESKey is configured ([push] aes_key_env)",
                ));
            };
            let plain = key.decrypt(encrypted, appid).map_err(|why| {
                if why.contains("appid") {
                    forbidden(why)
                } else {
                    malformed(why)
                }
            })?;
            Fields::parse(&plain).map_err(malformed)?
        }
        None => {
            check(&signature(&[token, timestamp, nonce]), param("signature"))?;
            outer
        }
    };
    let Some(verdict) = Verdict::of(&fields).map_err(malformed)? else {
        return Ok("success".into_response());
    };
    let (answer, answered) = tokio::sync::oneshot::channel();
    if app.writer.send((verdict, answer)).await.is_err() {
        return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "stopping".into()));
    }
    match tokio::time::timeout(Duration::from_secs(4), answered).await {
        Ok(Ok(Ok(_new))) => Ok("success".into_response()),
        // Not stored: WeChat retries the push.
        _ => Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the verdict could not be stored yet".into(),
        )),
    }
}

fn check(expected: &str, given: &str) -> Result<(), Refusal> {
    if given.is_empty() {
        return Err(forbidden("no signature"));
    }
    if !same_signature(expected, given) {
        return Err(forbidden("wrong signature"));
    }
    Ok(())
}

fn fresh(timestamp: &str) -> Result<(), Refusal> {
    let sent: i64 = timestamp
        .parse()
        .map_err(|_| forbidden("no timestamp, or not a number"))?;
    let now = crate::clock::now_ms() / 1000;
    if (now - sent).abs() > MAX_SKEW_SECONDS {
        return Err(forbidden(format!(
            "timestamp {sent} is {}s from now (at most {MAX_SKEW_SECONDS}s): a replay or a wrong clock",
            now - sent
        )));
    }
    Ok(())
}
