//! `riskbatch sim`: serves the WeChat simulator until interrupted. The first
//! line on stdout is its address, for scripts and tests.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::SimArgs;
use crate::exit::{Exit, usage};

pub fn execute(args: SimArgs) -> Result<Exit> {
    if args.push.push_to.is_some() {
        return push(args.push);
    }
    args.config
        .validate()
        .map_err(|e| usage(format!("riskbatch sim: {e}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let sim = crate::sim::start(args.config, &args.listen).await?;
        println!("riskbatch sim listening on {}", sim.base_url());
        std::io::stdout().flush()?;
        shutdown().await;
        drop(sim);
        Ok(Exit::Complete)
    })
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `--push-to`: pushes verdicts as WeChat would, prints a JSON report;
/// exit 0 when every one was answered `success`, 1 otherwise.
fn push(args: crate::cli::PushArgs) -> Result<Exit> {
    use crate::sim::push::{PushMode, PushPlan};
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let token = var(&args.push_token_env)
        .ok_or_else(|| usage(format!("set {} to the push Token", args.push_token_env)))?;
    let aes_key = match (args.push_mode, var(&args.push_aes_key_env)) {
        (PushMode::Plain, _) => None,
        (_, Some(key)) => Some(
            crate::receive::crypto::AesKey::parse(&key)
                .map_err(|why| usage(format!("{}: {why}", args.push_aes_key_env)))?,
        ),
        (_, None) => {
            return Err(usage(format!(
                "compatible and safe mode need {} (the EncodingAESKey)",
                args.push_aes_key_env
            )));
        }
    };
    let plan = PushPlan {
        url: args.push_to.unwrap_or_default(),
        count: args.push_count,
        rate: args.push_rate.max(1),
        concurrency: args.push_concurrency.max(1),
        mode: args.push_mode,
        format: args.push_format,
        token,
        aes_key,
        appid: args.push_appid,
        openid_prefix: args.push_openid_prefix,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(crate::sim::push::push(plan))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.refused == 0 {
        Exit::Complete
    } else {
        Exit::Failed
    })
}
