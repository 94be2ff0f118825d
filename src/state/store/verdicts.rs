//! Verdicts pushed by WeChat (`riskbatch receive`), kept with the job's runs.

use std::collections::HashMap;

use anyhow::Result;
use rusqlite::params;

use super::Store;

impl Store {
    /// Stores pushed verdicts in one durable transaction (synchronous FULL:
    /// they are answered `success` only once on disk); for each, whether it
    /// was new (false: the same `global_no` came before).
    pub fn put_verdicts(
        &mut self,
        verdicts: &[crate::receive::message::Verdict],
        now: i64,
    ) -> Result<Vec<bool>> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = self.conn.transaction()?;
        let mut new = Vec::with_capacity(verdicts.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO verdicts (global_no, querykey, risklevel, riskmsg, risktags, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for v in verdicts {
                new.push(
                    insert.execute(params![
                        v.global_no,
                        v.querykey,
                        v.risklevel,
                        v.riskmsg,
                        v.risktags,
                        now
                    ])? == 1,
                );
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// The latest verdict for each openid (`querykey`). Verdicts come for the
    /// accounts a campaign asked about, so this map is held in memory.
    pub fn latest_verdicts(&self) -> Result<HashMap<String, crate::output::Feedback>> {
        let mut stmt = self.conn.prepare(
            "SELECT querykey, risklevel, riskmsg, risktags, received_at FROM verdicts ORDER BY received_at, global_no",
        )?;
        let mut latest = HashMap::new();
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            latest.insert(
                r.get::<_, String>(0)?,
                crate::output::Feedback {
                    risklevel: r.get(1)?,
                    message: r.get(2)?,
                    tags: r.get(3)?,
                    at: r.get(4)?,
                },
            );
        }
        Ok(latest)
    }

    /// Distinct verdicts stored for the job.
    pub fn verdict_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM verdicts", [], |r| r.get::<_, i64>(0))?
            as u64)
    }
}
