//! Progress for people: an indicatif bar with rows/s, ETA and the running count
//! of high-risk rows on a terminal; one log line every few seconds otherwise (cron).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const LOG_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, log lines otherwise.
    Auto,
    Always,
    /// Log lines only.
    Never,
}

/// Figures shown while a run goes on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub done: u64,
    pub total: u64,
    pub high_risk: u64,
    pub calls: u64,
    pub rate: u32,
}

pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    done_at_start: u64,
    last_log: Instant,
}

impl Progress {
    pub fn new(mode: ProgressMode, total: u64, done: u64) -> Progress {
        let show_bar = match mode {
            ProgressMode::Always => true,
            ProgressMode::Never => false,
            ProgressMode::Auto => std::io::stderr().is_terminal(),
        };
        let bar = show_bar.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows  {per_sec}  ETA {eta}  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(done);
            bar.reset_eta();
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            done_at_start: done,
            last_log: Instant::now(),
        }
    }

    pub fn update(&mut self, f: Figures) {
        if let Some(bar) = &self.bar {
            bar.set_position(f.done);
            bar.set_message(format!("high risk {}  calls {}", f.high_risk, f.calls));
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
            let speed = (f.done - self.done_at_start.min(f.done)) as f64 / elapsed;
            let eta = if speed > 0.0 {
                crate::duration::human(Duration::from_secs_f64(
                    f.total.saturating_sub(f.done) as f64 / speed,
                ))
            } else {
                "?".into()
            };
            tracing::info!(
                done = f.done,
                total = f.total,
                rows_per_second = speed.round(),
                high_risk = f.high_risk,
                calls = f.calls,
                rate = f.rate,
                "progress {}/{} rows, {:.0} rows/s, ETA {eta}, {} high risk",
                f.done,
                f.total,
                speed,
                f.high_risk
            );
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
