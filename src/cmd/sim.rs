//! `riskbatch sim`: serves the WeChat simulator until interrupted. The first
//! line on stdout is its address, for scripts and tests.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::SimArgs;
use crate::exit::{Exit, usage};

pub fn execute(args: SimArgs) -> Result<Exit> {
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
