//! A thread that takes items one at a time beside the thread handing them
//! over, with a short queue between the two: the output pass encodes its
//! Parquet file and counts its clusters this way.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};

pub struct Worker<T, R> {
    items: Option<SyncSender<T>>,
    thread: JoinHandle<Result<R>>,
    name: &'static str,
}

impl<T: Send + 'static, R: Send + 'static> Worker<T, R> {
    /// Starts `work` on a thread named `riskbatch-{name}`; it receives the
    /// items given to [`Worker::give`], at most `queue` of them waiting.
    pub fn start(
        name: &'static str,
        queue: usize,
        work: impl FnOnce(Receiver<T>) -> Result<R> + Send + 'static,
    ) -> Result<Self> {
        let (items, received) = sync_channel(queue);
        let thread = std::thread::Builder::new()
            .name(format!("riskbatch-{name}"))
            .spawn(move || work(received))
            .with_context(|| format!("starting the {name} thread"))?;
        Ok(Worker {
            items: Some(items),
            thread,
            name,
        })
    }

    /// Hands `item` over, waiting while the queue is full.
    pub fn give(&mut self, item: T) {
        if let Some(items) = &self.items
            && items.send(item).is_err()
        {
            // The thread stopped on an error: `finish` reports it.
            self.items = None;
        }
    }

    /// Closes the queue and waits for the thread's result.
    pub fn finish(mut self) -> Result<R> {
        self.items = None;
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => bail!("the {} thread panicked", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_given_is_worked_on_before_finish_returns() {
        let mut sum = Worker::start("test", 2, |items| Ok(items.iter().sum::<u64>())).unwrap();
        for i in 1..=100 {
            sum.give(i);
        }
        assert_eq!(sum.finish().unwrap(), 5050);
    }

    #[test]
    fn an_error_on_the_thread_is_what_finish_returns() {
        let mut failing = Worker::start("test", 1, |items| {
            for item in items {
                if item == 3 {
                    bail!("item {item} is bad");
                }
            }
            Ok(())
        })
        .unwrap();
        for i in 0..10 {
            failing.give(i);
        }
        assert_eq!(failing.finish().unwrap_err().to_string(), "item 3 is bad");
    }
}
