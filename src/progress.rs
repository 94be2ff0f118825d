//! Progress for people: an indicatif bar with rows/s, ETA and the running count
//! of high-risk rows on a terminal; one log line every few seconds otherwise (cron).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const LOG_EVERY: Duration = Duration::from_secs(5);
/// How often the bar's text is rebuilt.
const DRAW_EVERY: Duration = Duration::from_millis(100);

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
    pub retries: u64,
    pub rate: u32,
}

pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    done_at_start: u64,
    last_log: Instant,
    last_draw: Option<Instant>,
}

impl Progress {
    pub fn new(mode: ProgressMode, total: u64, done: u64) -> Progress {
        let show_bar = match mode {
            ProgressMode::Always => true,
            ProgressMode::Never => false,
            ProgressMode::Auto => std::io::stderr().is_terminal(),
        };
        let bar = show_bar.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
            // The figures are formatted here, not by indicatif's `{per_sec}`
            // and `{eta}`: those print 4 decimals and an ETA of 0s before the
            // first row, and a `{wide_bar}` beside long fields shrinks to a cell.
            bar.set_style(
                ProgressStyle::with_template("{spinner} {bar:24} {prefix}\n  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_position(done);
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            done_at_start: done,
            last_log: Instant::now(),
            last_draw: None,
        }
    }

    pub fn update(&mut self, f: Figures) {
        let speed = self.speed(f.done);
        if let Some(bar) = &self.bar {
            // The runner calls this every loop turn; the bar redraws 4 times a second.
            if self.last_draw.is_some_and(|at| at.elapsed() < DRAW_EVERY) {
                return;
            }
            self.last_draw = Some(Instant::now());
            let width = console::Term::stderr().size().1 as usize;
            bar.set_position(f.done);
            // The spinner and the bar take 26 cells, and the last one stays free.
            let (progress, figures) = bar_lines(&f, speed);
            bar.set_prefix(fit(&progress, width.saturating_sub(27).max(20)));
            bar.set_message(fit(&figures, width.saturating_sub(3).max(20)));
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let eta = eta(&f, speed).unwrap_or_else(|| "?".into());
            tracing::info!(
                done = f.done,
                total = f.total,
                rows_per_second = speed.map_or(0.0, f64::round),
                high_risk = f.high_risk,
                calls = f.calls,
                retries = f.retries,
                rate = f.rate,
                "progress {}/{} rows, {:.0} rows/s, ETA {eta}, {} high risk",
                f.done,
                f.total,
                speed.unwrap_or(0.0),
                f.high_risk
            );
        }
    }

    /// Rows per second of this invocation, once it has decided a row and run
    /// a second: earlier figures swing too much to be worth showing.
    fn speed(&self, done: u64) -> Option<f64> {
        let elapsed = self.started.elapsed().as_secs_f64();
        let decided = done.saturating_sub(self.done_at_start);
        (elapsed >= 1.0 && decided > 0).then(|| decided as f64 / elapsed)
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

fn eta(f: &Figures, speed: Option<f64>) -> Option<String> {
    let speed = speed?;
    let left = f.total.saturating_sub(f.done) as f64 / speed;
    Some(crate::duration::human(Duration::from_secs(
        left.ceil() as u64
    )))
}

/// The bar's two lines of text: progress beside the bar, then the figures.
fn bar_lines(f: &Figures, speed: Option<f64>) -> (Vec<String>, Vec<String>) {
    let percent = if f.total > 0 {
        f.done as f64 * 100.0 / f.total as f64
    } else {
        100.0
    };
    let mut progress = vec![
        format!("{}/{} rows", thousands(f.done), thousands(f.total)),
        format!("{percent:.1}%"),
    ];
    progress.extend(eta(f, speed).map(|eta| format!("ETA {eta}")));
    let mut figures = Vec::new();
    figures.extend(speed.map(|speed| format!("{} rows/s", thousands(speed.round() as u64))));
    figures.push(format!("high risk {}", thousands(f.high_risk)));
    figures.push(format!("calls {}", thousands(f.calls)));
    figures.push(format!("retries {}", thousands(f.retries)));
    (progress, figures)
}

/// As many of `fields` as fit in `width`, in order, two spaces apart.
fn fit(fields: &[String], width: usize) -> String {
    let mut line = String::new();
    for field in fields {
        let extra = if line.is_empty() { 0 } else { 2 };
        if line.chars().count() + extra + field.chars().count() > width {
            break;
        }
        if !line.is_empty() {
            line.push_str("  ");
        }
        line.push_str(field);
    }
    line
}

/// 1234567 as "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(done: u64, total: u64) -> Figures {
        Figures {
            done,
            total,
            high_risk: 1_234,
            calls: 456_789,
            retries: 12,
            rate: 1000,
        }
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn both_lines_fit_80_columns_on_ten_million_rows() {
        let big = Figures {
            done: 4_567_890,
            total: 10_000_000,
            high_risk: 412_345,
            calls: 4_600_123,
            retries: 32_100,
            rate: 1000,
        };
        let (progress, figures) = bar_lines(&big, Some(37_463.801_8));
        let first = fit(&progress, 80 - 27);
        let second = fit(&figures, 80 - 3);
        assert_eq!(first, "4,567,890/10,000,000 rows  45.7%  ETA 2m25s");
        assert_eq!(
            second,
            "37,464 rows/s  high risk 412,345  calls 4,600,123  retries 32,100"
        );
    }

    #[test]
    fn no_speed_and_no_eta_before_the_first_row() {
        let (progress, figures) = bar_lines(&figures(0, 50_000), None);
        assert_eq!(fit(&progress, 53), "0/50,000 rows  0.0%");
        assert_eq!(
            fit(&figures, 77),
            "high risk 1,234  calls 456,789  retries 12"
        );
    }

    #[test]
    fn fields_that_do_not_fit_are_left_out_whole() {
        let fields = ["aaaa".to_string(), "bbbb".to_string(), "cccc".to_string()];
        assert_eq!(fit(&fields, 11), "aaaa  bbbb");
        assert_eq!(fit(&fields, 3), "");
    }
}
