//! The call side of a run: the workers that send the calls on the async
//! runtime, and the queues between them and the runner thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{CallOrder, Finished};
use crate::clock::now_ms;
use crate::outcome::{Answer, PauseReason, RiskSource, RowOutcome, RowStatus};
use crate::state::journal::{CallRecord, Journal};
use crate::wechat::client::{CallEnd, RiskClient};

/// Finished calls on their way from the call side to the runner.
///
/// The runner is woken once per `wake_at` calls, or finds them when its
/// `POLL_TICK` wait ends, instead of once per call: waking it for each one
/// took 8 % of the call side's time (mostly futex calls) and cost the runner a
/// context switch per row. Orders are queued ahead of the call side, so a
/// late runner never leaves a slot idle.
pub(super) struct Completions {
    queue: Mutex<Vec<Finished>>,
    ready: Condvar,
    wake_at: usize,
}

impl Completions {
    pub(super) fn new(wake_at: usize) -> Completions {
        Completions {
            queue: Mutex::new(Vec::new()),
            ready: Condvar::new(),
            wake_at,
        }
    }

    fn push(&self, finished: Finished) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.push(finished);
        if queue.len() == self.wake_at {
            self.ready.notify_one();
        }
    }

    /// Moves every finished call into `into`, waiting up to `wait` for `wake_at` of them.
    pub(super) fn take(&self, wait: Duration, into: &mut Vec<Finished>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() < self.wake_at {
            queue = self
                .ready
                .wait_timeout_while(queue, wait, |q| q.len() < self.wake_at)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::swap(&mut *queue, into);
    }
}

/// Calls queued ahead of the call side, in time at the rate calls finish:
/// the slots stay busy through most of a commit of the runner's (a median
/// 100 ms on 1,000,000 rows, 180 ms on 10,000,000; with two per slot, 10 M
/// rows spent 22 % of the run in commits with the calls idle), and a
/// `--deadline` stop, which lets the calls handed over finish, still ends
/// promptly: the rate is the one measured, not the configured one, which a
/// slow server never reaches.
const QUEUED_AHEAD: Duration = Duration::from_millis(100);
/// ... but never more than this many orders (memory), nor fewer than two per slot.
const MAX_QUEUED_AHEAD: usize = 4096;

/// How many calls may be handed over and unfinished at once.
pub(super) fn orders_ahead(concurrency: usize, calls_per_second: f64) -> usize {
    let at_rate = (calls_per_second * QUEUED_AHEAD.as_secs_f64()) as usize;
    at_rate.min(MAX_QUEUED_AHEAD).max(2 * concurrency)
}

/// Calls finished per second, measured over the last full second.
pub(super) struct FinishRate {
    since: std::time::Instant,
    finished: u64,
    per_second: f64,
}

impl FinishRate {
    pub(super) fn new() -> FinishRate {
        FinishRate {
            since: std::time::Instant::now(),
            finished: 0,
            per_second: 0.0,
        }
    }

    pub(super) fn add(&mut self, finished: usize) {
        self.finished += finished as u64;
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            self.per_second = self.finished as f64 / elapsed.as_secs_f64();
            self.finished = 0;
            self.since = std::time::Instant::now();
        }
    }

    pub(super) fn per_second(&self) -> f64 {
        self.per_second
    }
}

/// A quarter of the calls in flight: the runner still hears of them long
/// before the orders queued ahead run out.
pub(super) fn calls_per_wake(concurrency: usize) -> usize {
    (concurrency / 4).max(1)
}

/// Orders handed from the dispatcher to the call workers.
struct OrderQueue {
    orders: Mutex<VecDeque<CallOrder>>,
    ready: tokio::sync::Notify,
    closed: AtomicBool,
}

impl OrderQueue {
    /// The next order, waiting for one; `None` once the queue is closed and empty.
    async fn next(&self) -> Option<CallOrder> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            // Registered before looking, so an order pushed in between still wakes this worker.
            notified.as_mut().enable();
            if let Some(order) = self
                .orders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return Some(order);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }
}

/// Runs the calls: `concurrency` workers, each taking its next order only once
/// the outcome of its last call is in the journal. Long-lived workers rather
/// than a task per call: spawning one and moving its large future into place
/// took about 6 % of the call side's time in a profile.
pub(super) async fn dispatch(
    mut batches: tokio::sync::mpsc::UnboundedReceiver<Vec<CallOrder>>,
    client: Arc<RiskClient>,
    journal: Arc<Journal>,
    finished: Arc<Completions>,
    concurrency: usize,
) {
    let queue = Arc::new(OrderQueue {
        orders: Mutex::new(VecDeque::new()),
        ready: tokio::sync::Notify::new(),
        closed: AtomicBool::new(false),
    });
    // Dropped with this task when it is aborted: that aborts the workers too.
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        workers.spawn(call_worker(
            queue.clone(),
            client.clone(),
            journal.clone(),
            finished.clone(),
        ));
    }
    while let Some(batch) = batches.recv().await {
        let n = batch.len();
        queue
            .orders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(batch);
        for _ in 0..n {
            queue.ready.notify_one();
        }
    }
    queue.closed.store(true, Ordering::Release);
    queue.ready.notify_waiters();
    while workers.join_next().await.is_some() {}
}

async fn call_worker(
    queue: Arc<OrderQueue>,
    client: Arc<RiskClient>,
    journal: Arc<Journal>,
    finished: Arc<Completions>,
) {
    while let Some(order) = queue.next().await {
        let result = client
            .call(order.row, &order.request, order.earlier_attempts)
            .await;
        let (ending, record) = call_record(&order, result.end, result.attempts);
        let journaled = match &record {
            Some(record) => match journal.enqueue(record) {
                Ok(ticket) => {
                    // Calls that finished in the same turn of the runtime
                    // queue theirs too: one write for all.
                    tokio::task::yield_now().await;
                    journal
                        .flush_through(ticket)
                        .map(|()| Some(ticket.generation))
                }
                Err(err) => Err(err),
            },
            None => Ok(None),
        }
        .map_err(|err| format!("{err:#}"));
        // The outcome is on disk (or the run fails): this worker may take the next order.
        finished.push(Finished {
            chunk: order.chunk,
            key: order.key,
            ending,
            attempts: result.attempts,
            busy: result.busy,
            record,
            journaled,
        });
    }
}

/// How a call ended, once its answer has moved into its record.
pub(super) enum Ending {
    Answered,
    Failed,
    Pause(PauseReason),
    Fatal(String),
    NotSent,
}

/// How the call ended, and the outcome it gives its row as the journal and
/// the store record it (`None` when the call sent nothing).
fn call_record(order: &CallOrder, end: CallEnd, attempts: u32) -> (Ending, Option<CallRecord>) {
    let (ending, answer, source, key) = match end {
        CallEnd::NotSent => return (Ending::NotSent, None),
        CallEnd::Answered(answer) => (
            Ending::Answered,
            answer,
            Some(RiskSource::Api),
            Some(order.key),
        ),
        CallEnd::Failed(answer) => (Ending::Failed, answer, None, None),
        CallEnd::Pause(reason, answer) => (Ending::Pause(reason), answer, None, None),
        CallEnd::Fatal(message) => (
            Ending::Fatal(message.clone()),
            Answer::local(RowStatus::Failed, None, Some(message), now_ms()),
            None,
            None,
        ),
    };
    // SPEC §4: no source for a row the API could not take (HTTP 413).
    let source = if answer.status.is_final() && answer.status != RowStatus::InvalidInput {
        source
    } else {
        None
    };
    let record = CallRecord {
        outcome: RowOutcome {
            row: order.row,
            answer,
            source,
            attempts: order.earlier_attempts + attempts,
        },
        key,
        requests: attempts,
    };
    (ending, Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_ahead_cover_a_tenth_of_a_second_within_bounds() {
        assert_eq!(
            orders_ahead(64, 0.0),
            128,
            "two per slot before a rate is measured"
        );
        assert_eq!(orders_ahead(64, 10.0), 128, "two per slot at a low rate");
        assert_eq!(orders_ahead(64, 4_000.0), 400);
        assert_eq!(orders_ahead(64, 1_000_000.0), MAX_QUEUED_AHEAD);
        assert_eq!(
            orders_ahead(10_000, 1e6),
            20_000,
            "never below two per slot"
        );
    }

    #[test]
    fn the_finish_rate_is_measured_over_whole_seconds() {
        let mut rate = FinishRate::new();
        rate.add(500);
        assert_eq!(rate.per_second(), 0.0, "not a second yet");
        rate.since -= Duration::from_secs(2);
        rate.add(500);
        assert!(
            (490.0..=500.0).contains(&rate.per_second()),
            "{}",
            rate.per_second()
        );
        rate.add(7);
        assert!(rate.per_second() > 490.0, "kept until the next full second");
    }
}
