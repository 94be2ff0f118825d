//! How fast the calls go: at most `rate` requests a second, and at most
//! `concurrency` requests in flight, each holding its slot for its latency,
//! its retries and their waits. The time is set by the lower of the two.

use serde::{Deserialize, Serialize};

use crate::job::{BaseUrl, Job};
use crate::sim::SimConfig;
use crate::state::store::MeasuredPace;

/// Fewer timed requests than this say too little about the latency.
const MIN_MEASURED: u64 = 50;

/// The backoff of `RiskClient::call`: 200 ms doubling, with a jitter that
/// adds up to one more delay (half of it on average).
const FIRST_BACKOFF_SECONDS: f64 = 0.2;
const MEAN_JITTER: f64 = 1.5;

/// Where the pace came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaceSource {
    /// This job's earlier invocations, over this many timed requests.
    Measured { requests: u64 },
    /// The job's `[sim]` settings (latency, faults, timeout).
    Simulator,
    /// Nothing known yet: the rate alone.
    Unknown,
}

/// What one distinct request costs, in requests and in slot time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pace {
    /// Requests sent per distinct request (retries included).
    pub attempts: f64,
    /// Seconds a request holds its concurrency slot, retries and their waits
    /// included; 0 when unknown.
    pub slot_seconds: f64,
    pub source: PaceSource,
}

/// Which limit sets the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    Rate,
    Concurrency,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimeEstimate {
    pub seconds: f64,
    /// Distinct requests answered per second.
    pub per_second: f64,
    pub bound: Bound,
}

impl Pace {
    /// From this job's earlier invocations when they timed enough requests,
    /// else from the simulator's settings when the job calls it.
    pub fn for_job(job: &Job, measured: Option<MeasuredPace>) -> Pace {
        match measured {
            Some(m) if m.timed >= MIN_MEASURED && m.sent > m.retries => Pace {
                attempts: m.sent as f64 / (m.sent - m.retries) as f64,
                slot_seconds: m.busy_us as f64 / m.timed as f64 / 1e6,
                source: PaceSource::Measured { requests: m.timed },
            },
            _ if job.api.base_url == BaseUrl::Sim => Pace::of_simulator(&job.sim, job),
            _ => Pace {
                attempts: 1.0,
                slot_seconds: 0.0,
                source: PaceSource::Unknown,
            },
        }
    }

    /// What the simulator's latency and fault rates cost a request on average.
    fn of_simulator(sim: &SimConfig, job: &Job) -> Pace {
        let rates = sim.fault_rates();
        let timeout = job.throttle.timeout.as_secs_f64();
        let latency = sim.latency.as_secs_f64() + sim.latency_spread.as_secs_f64() / 2.0;
        // A slow answer fails when it comes after the timeout.
        let slow_time = (latency + sim.slow_delay.as_secs_f64()).min(timeout);
        let slow_fails = latency + sim.slow_delay.as_secs_f64() >= timeout;
        let answer_faults =
            rates.busy + rates.inner_error + rates.http_error + rates.drop + rates.malformed;
        let fail = (rates.slow * f64::from(u8::from(slow_fails))
            + (1.0 - rates.slow) * answer_faults)
            .clamp(0.0, 0.999);
        let attempt_time = (1.0 - rates.slow) * latency + rates.slow * slow_time;
        let mut attempts = 1.0;
        let mut waits = 0.0;
        let mut reach = 1.0;
        for retry in 0..job.throttle.max_retries {
            reach *= fail;
            attempts += reach;
            waits += reach * FIRST_BACKOFF_SECONDS * MEAN_JITTER * 2f64.powi(retry as i32);
        }
        Pace {
            attempts,
            slot_seconds: attempts * attempt_time + waits,
            source: PaceSource::Simulator,
        }
    }

    /// The time `calls` distinct requests take at this pace.
    pub fn time(&self, calls: u64, job: &Job) -> TimeEstimate {
        let by_rate = f64::from(job.throttle.rate) / self.attempts;
        let by_concurrency = if self.slot_seconds > 0.0 {
            f64::from(job.throttle.concurrency) / self.slot_seconds
        } else {
            f64::INFINITY
        };
        let (per_second, bound) = if by_concurrency < by_rate {
            (by_concurrency, Bound::Concurrency)
        } else {
            (by_rate, Bound::Rate)
        };
        TimeEstimate {
            seconds: calls as f64 / per_second,
            per_second,
            bound,
        }
    }

    /// One line for a person: which limit and where the figures came from.
    pub fn describe(&self, time: &TimeEstimate, job: &Job) -> String {
        let source = match self.source {
            PaceSource::Measured { requests } => {
                format!("measured over {requests} requests of this job's earlier invocations")
            }
            PaceSource::Simulator => "from the [sim] settings".to_string(),
            PaceSource::Unknown => {
                return format!(
                    "at the rate of {}/s; the latency is not known before a first invocation, \
                     and concurrency {} ÷ latency may be lower",
                    job.throttle.rate, job.throttle.concurrency
                );
            }
        };
        let retries = (self.attempts - 1.0) * 100.0;
        match time.bound {
            Bound::Rate => format!(
                "at the rate of {}/s with {retries:.1} % retries ({source})",
                job.throttle.rate
            ),
            Bound::Concurrency => format!(
                "bound by concurrency {} ÷ {:.0} ms per request = {:.0}/s, below the rate of {}/s \
                 ({retries:.1} % retries, {source})",
                job.throttle.concurrency,
                self.slot_seconds * 1000.0,
                time.per_second,
                job.throttle.rate
            ),
        }
    }
}
