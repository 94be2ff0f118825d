//! Paces requests so that no 1-second window ever holds more than `rate` of them,
//! and slows down for a while when WeChat answers 45011.
//!
//! The limiter is governor's GCRA. GCRA with a burst of `b` cells lets `r + b - 1`
//! cells through in a 1 s window, so the cell rate is lowered by `b - 1` to keep
//! the promise exactly; a burst of about 5 ms worth keeps throughput high even
//! though tokio's timer only wakes waiters every millisecond. A request leaves
//! the pacer a little before it reaches WeChat, and not always equally soon
//! (the soak test measured 7 requests too many in a 1 s window at 3000/s), so
//! 2 % of the rate — 20 ms of such jitter — is kept in reserve.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// How long a 45011 keeps the rate lowered.
const SLOW_DOWN_FOR: Duration = Duration::from_secs(60);

pub struct Pacer {
    rate: u32,
    clock: DefaultClock,
    state: Mutex<PacerState>,
}

struct PacerState {
    limiter: Arc<DefaultDirectRateLimiter>,
    /// The rate in force now (lower than `rate` while slowed down).
    current_rate: u32,
    slow_until: Option<Instant>,
}

fn limiter(rate: u32, clock: &DefaultClock) -> Arc<DefaultDirectRateLimiter> {
    let burst = (rate / 200).max(1);
    let reserve = rate / 50;
    let cells_per_second = (rate - (burst - 1) - reserve).max(1);
    let period = Duration::from_secs_f64(1.0 / f64::from(cells_per_second));
    let quota = Quota::with_period(period)
        .expect("a positive rate gives a positive period")
        .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"));
    Arc::new(RateLimiter::direct_with_clock(quota, clock.clone()))
}

impl Pacer {
    pub fn new(rate: u32) -> Pacer {
        let clock = DefaultClock::default();
        let rate = rate.max(1);
        Pacer {
            rate,
            state: Mutex::new(PacerState {
                limiter: limiter(rate, &clock),
                current_rate: rate,
                slow_until: None,
            }),
            clock,
        }
    }

    /// Waits until one more request may be sent.
    pub async fn ready(&self) {
        loop {
            let limiter = self.current_limiter();
            match limiter.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    tokio::time::sleep(wait.max(Duration::from_micros(100))).await;
                }
            }
        }
    }

    fn current_limiter(&self) -> Arc<DefaultDirectRateLimiter> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = state.slow_until
            && Instant::now() >= until
        {
            state.slow_until = None;
            state.current_rate = self.rate;
            state.limiter = limiter(self.rate, &self.clock);
            tracing::info!(rate = self.rate, "rate restored after the 45011 slow-down");
        }
        state.limiter.clone()
    }

    /// Halves the rate for a while (WeChat's minute-frequency limit, 45011).
    /// Repeated calls within a short time halve it only once per second.
    pub fn slow_down(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let recently = state
            .slow_until
            .is_some_and(|until| until > now + SLOW_DOWN_FOR - Duration::from_secs(1));
        if recently {
            return;
        }
        let lowered = (state.current_rate / 2).max(1);
        state.current_rate = lowered;
        state.limiter = limiter(lowered, &self.clock);
        state.slow_until = Some(now + SLOW_DOWN_FOR);
        tracing::warn!(
            rate = lowered,
            "WeChat answered 45011 (frequency limit): sending at {lowered}/s for {}s",
            SLOW_DOWN_FOR.as_secs()
        );
    }

    /// The rate in force now.
    pub fn current_rate(&self) -> u32 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts how many cells the limiter lets through in its first second,
    /// without sleeping: the count must never exceed the rate.
    fn first_second(rate: u32) -> u32 {
        let clock = governor::clock::FakeRelativeClock::default();
        let burst = (rate / 200).max(1);
        let cells = rate - (burst - 1);
        let quota = Quota::with_period(Duration::from_secs_f64(1.0 / f64::from(cells)))
            .unwrap()
            .allow_burst(NonZeroU32::new(burst).unwrap());
        let limiter = RateLimiter::direct_with_clock(quota, clock.clone());
        let mut passed = 0;
        let step = Duration::from_micros(50);
        let mut elapsed = Duration::ZERO;
        while elapsed < Duration::from_secs(1) {
            while limiter.check().is_ok() {
                passed += 1;
            }
            clock.advance(step);
            elapsed += step;
        }
        passed
    }

    #[test]
    fn never_more_than_rate_in_a_second_and_close_to_it() {
        for rate in [1, 7, 50, 1000, 20_000, 100_000] {
            let passed = first_second(rate);
            assert!(passed <= rate, "rate {rate}: {passed} passed");
            assert!(
                f64::from(passed) >= f64::from(rate) * 0.98 - 1.0,
                "rate {rate}: only {passed}"
            );
        }
    }

    #[test]
    fn slow_down_halves_once_per_burst_of_45011() {
        let pacer = Pacer::new(100);
        pacer.slow_down();
        pacer.slow_down();
        assert_eq!(pacer.current_rate(), 50);
    }
}
