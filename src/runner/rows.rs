//! The rows the runner decides: the reader thread that parses chunks ahead,
//! and each chunk's rows that still lack a final outcome.

use std::collections::HashSet;

use anyhow::Result;

use super::{HashMap, RunEnd, Runner};
use crate::clock::now_ms;
use crate::input::InputChunk;
use crate::outcome::{PauseReason, RowOutcome};
use crate::wechat::RiskRequest;

/// A row of the input waiting for its decision.
pub(super) struct PendingRow {
    pub(super) row: u64,
    pub(super) chunk: u64,
    pub(super) request: Result<RiskRequest, String>,
    pub(super) earlier_attempts: u32,
}

impl Runner<'_> {
    pub(super) fn start_reader(&mut self, done_chunks: HashSet<u64>) -> Result<()> {
        let chunks = self
            .input
            .chunks_ahead(self.job.throttle.chunk_size as usize, move |c| {
                done_chunks.contains(&c)
            })?;
        self.chunks = Some(chunks);
        Ok(())
    }

    /// The next row without a final outcome, reading the next chunk when needed.
    pub(super) fn next_row(&mut self) -> Result<Option<PendingRow>> {
        loop {
            if let Some(row) = self.queue.pop_front() {
                return Ok(Some(row));
            }
            let Some(chunks) = &mut self.chunks else {
                return Ok(None);
            };
            if self
                .bounds
                .max_chunks
                .is_some_and(|max| self.chunks_started >= max)
            {
                // Finish what is in flight; pause only if a chunk is left for next time.
                let more = chunks.next().is_some();
                self.chunks = None;
                if more && self.stop.is_none() {
                    self.stop = Some(RunEnd::Paused(PauseReason::MaxChunks));
                }
                return Ok(None);
            }
            match chunks.next() {
                Some(Ok(chunk)) => self.start_chunk(chunk)?,
                Some(Err(err)) => {
                    // Damage found mid-file: what is done so far is kept,
                    // and the calls in flight finish.
                    self.chunks = None;
                    if !matches!(self.stop, Some(RunEnd::Failed(_))) {
                        self.stop = Some(RunEnd::Failed(format!("{err:#}")));
                    }
                    return Ok(None);
                }
                None => {
                    self.chunks = None;
                    return Ok(None);
                }
            }
        }
    }

    fn start_chunk(&mut self, chunk: InputChunk) -> Result<()> {
        self.chunks_started += 1;
        let last = chunk.first_row + chunk.len() as u64 - 1;
        let stored: HashMap<u64, RowOutcome> = self
            .store
            .rows_between(self.run.id, chunk.first_row, last)?
            .into_iter()
            .map(|o| (o.row, o))
            .collect();
        let requests = self.input.requests(&chunk);
        let mut left = 0;
        for (i, request) in requests.into_iter().enumerate() {
            let row = chunk.first_row + i as u64;
            let earlier_attempts = match stored.get(&row) {
                Some(outcome) if outcome.answer.status.is_final() => continue,
                Some(outcome) => outcome.attempts,
                None => 0,
            };
            left += 1;
            self.queue.push_back(PendingRow {
                row,
                chunk: chunk.index,
                request,
                earlier_attempts,
            });
        }
        if left == 0 {
            self.store
                .mark_chunk_done(self.run.id, chunk.index, now_ms())?;
            self.writes += 1;
        } else {
            self.chunk_left.insert(chunk.index, left);
        }
        Ok(())
    }
}
