//! Paces requests so that no 1-second window ever holds more than `rate` of
//! them, and slows down for a while when WeChat answers 45011.
//!
//! Each request is given a send time on a fixed schedule, `1.007 s / rate`
//! apart, and sleeps until it. A sleeper that wakes late (tokio's timer ticks
//! every millisecond) does not push the schedule back, so the mean rate holds
//! at low rates too — a GCRA limiter such as governor's, with the burst of 1
//! that exactness needs, restarts its schedule from every late wake-up and
//! gave 72 % of `rate = 300`. The schedule never saves up a burst while idle.
//! The 7 ms the schedule leaves in every second absorb what happens between
//! here and WeChat (wake-ups up to 2 ms late, a preempted thread on a busy
//! machine, the loopback): measured at the simulator with a CPU hog on one
//! of the two cores, the worst second at rate 1000 held 1003 requests with
//! 5 ms, 999 with 7 ms (the mean is 99.4 % and 99.2 % of the rate). A
//! window of the actual send times refuses the `rate + 1`-th request of any
//! 1.007 s, so that a stalled process that wakes with many requests due
//! cannot send them in one burst.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a 45011 keeps the rate lowered.
const SLOW_DOWN_FOR: Duration = Duration::from_secs(60);

/// The window no more than `rate` requests may be sent in: one second and
/// the margin for what happens between the pacer and the server.
const WINDOW: Duration = Duration::from_millis(1007);

/// How late tokio's timer wakes a sleeper on average.
const TIMER_LATENESS: Duration = Duration::from_micros(1200);

/// Above this rate the window of send times is not kept (it would hold
/// this many instants): such a rate means "as fast as possible".
const MAX_TRACKED_RATE: u32 = 100_000;

pub struct Pacer {
    rate: u32,
    state: Mutex<PacerState>,
}

struct PacerState {
    /// The rate in force now (lower than `rate` while slowed down).
    current_rate: u32,
    period: Duration,
    /// The send time the next request gets, unless it comes later.
    next: Instant,
    /// When the last `current_rate` requests were sent.
    sent: VecDeque<Instant>,
    slow_until: Option<Instant>,
}

impl PacerState {
    fn set_rate(&mut self, rate: u32) {
        self.current_rate = rate;
        self.period = WINDOW / rate;
        let excess = self.sent.len().saturating_sub(rate as usize);
        self.sent.drain(..excess);
    }

    /// The time the next request may be sent, given the requests sent in the window.
    fn window_allows(&mut self, now: Instant) -> Result<(), Instant> {
        if self.current_rate > MAX_TRACKED_RATE {
            return Ok(());
        }
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.current_rate as usize {
            return Err(self.sent[self.sent.len() - self.current_rate as usize] + WINDOW);
        }
        self.sent.push_back(now);
        Ok(())
    }
}

impl Pacer {
    pub fn new(rate: u32) -> Pacer {
        let rate = rate.max(1);
        let mut state = PacerState {
            current_rate: rate,
            period: Duration::ZERO,
            next: Instant::now(),
            sent: VecDeque::new(),
            slow_until: None,
        };
        state.set_rate(rate);
        Pacer {
            rate,
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PacerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until one more request may be sent.
    pub async fn ready(&self) {
        let mut at = {
            let mut state = self.lock();
            self.restore_if_due(&mut state);
            let slot = state.next.max(Instant::now());
            state.next = slot + state.period;
            slot
        };
        // tokio's timer fires on millisecond ticks, up to about 2 ms late:
        // aiming at the slot a little early keeps the mean on the schedule,
        // and the window below keeps an early send from ever making a
        // second hold more than `rate`.
        let mut aim = at.checked_sub(TIMER_LATENESS).unwrap_or(at);
        loop {
            if aim > Instant::now() {
                tokio::time::sleep_until(aim.into()).await;
            }
            match self.lock().window_allows(Instant::now()) {
                Ok(()) => return,
                Err(later) => {
                    at = later;
                    aim = at;
                }
            }
        }
    }

    fn restore_if_due(&self, state: &mut PacerState) {
        if let Some(until) = state.slow_until
            && Instant::now() >= until
        {
            state.slow_until = None;
            state.set_rate(self.rate);
            tracing::info!(rate = self.rate, "rate restored after the 45011 slow-down");
        }
    }

    /// Halves the rate for a while (WeChat's minute-frequency limit, 45011).
    /// Repeated calls within a short time halve it only once per second.
    pub fn slow_down(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        let recently = state
            .slow_until
            .is_some_and(|until| until > now + SLOW_DOWN_FOR - Duration::from_secs(1));
        if recently {
            return;
        }
        let lowered = (state.current_rate / 2).max(1);
        state.set_rate(lowered);
        state.slow_until = Some(now + SLOW_DOWN_FOR);
        tracing::warn!(
            rate = lowered,
            "WeChat answered 45011 (frequency limit): sending at {lowered}/s for {}s",
            SLOW_DOWN_FOR.as_secs()
        );
    }

    /// The rate in force now.
    pub fn current_rate(&self) -> u32 {
        self.lock().current_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Send times of `n` requests from `workers` concurrent callers.
    async fn send_times(rate: u32, workers: usize, n: usize) -> Vec<Instant> {
        let pacer = std::sync::Arc::new(Pacer::new(rate));
        let times = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (pacer, times) = (pacer.clone(), times.clone());
            tasks.spawn(async move {
                loop {
                    pacer.ready().await;
                    let mut times = times.lock().unwrap();
                    if times.len() >= n {
                        return;
                    }
                    times.push(Instant::now());
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let mut times = std::sync::Arc::try_unwrap(times)
            .unwrap()
            .into_inner()
            .unwrap();
        times.sort();
        times
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_second_holds_more_than_the_rate() {
        // Counts, not timings, are asserted: the exact figures over 30 s
        // runs come from bench/pacing.sh, measured at the server.
        let rate = 200;
        let times = send_times(rate, 8, 600).await;
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                .count();
            assert!(
                in_window <= rate as usize,
                "{in_window} in the second from request {i}"
            );
        }
    }

    #[test]
    fn a_stall_does_not_release_a_burst() {
        // A process that stalled wakes with requests long due: the window of
        // send times lets `rate` of them through, and the next only once the
        // first of those has left the window.
        let pacer = Pacer::new(10);
        let mut state = pacer.lock();
        let woke = Instant::now();
        for _ in 0..10 {
            assert_eq!(state.window_allows(woke), Ok(()));
        }
        assert_eq!(
            state.window_allows(woke + Duration::from_millis(500)),
            Err(woke + WINDOW)
        );
        assert_eq!(state.window_allows(woke + WINDOW), Ok(()));
    }

    #[test]
    fn slow_down_halves_once_per_burst_of_45011() {
        let pacer = Pacer::new(100);
        pacer.slow_down();
        pacer.slow_down();
        assert_eq!(pacer.current_rate(), 50);
    }
}
