//! The default archive: one SQLite file (rusqlite with SQLite bundled: nothing to install).
//!
//! WAL journal with `synchronous=FULL`: a transaction that returned is on disk. One process may
//! hold the file at a time for writing; SQLite serialises writers, and `busy_timeout` makes a
//! second opener wait instead of failing.

use super::store::{Counts, NewJob, Row, RowState, Store, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::time::Duration;

pub struct Sqlite {
    db: Connection,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite").finish_non_exhaustive()
    }
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fanout_jobs (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    tube TEXT NOT NULL,
    pri INTEGER NOT NULL,
    ttr INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    server_id INTEGER NOT NULL,
    server_instance TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'archived')),
    claimed_by TEXT,
    claim_until_ms INTEGER
);
CREATE INDEX IF NOT EXISTS fanout_jobs_due ON fanout_jobs (state, due_ms);
";

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        let db = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        db.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        db.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        db.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        db.execute_batch(SCHEMA).map_err(err)?;
        Ok(Sqlite { db })
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        let state: String = r.get(8)?;
        Ok(Row {
            row: r.get(0)?,
            job: NewJob {
                tube: r.get(1)?,
                pri: r.get(2)?,
                ttr: r.get(3)?,
                due_ms: r.get(4)?,
                body: r.get(5)?,
                server_id: r.get::<_, i64>(6)? as u64,
                server_instance: r.get(7)?,
            },
            state: match state.as_str() {
                "pending" => RowState::Pending,
                _ => RowState::Archived,
            },
        })
    }

    /// Runs `sql` (with `row_id BETWEEN ?1 AND ?2`) once per run of consecutive row ids in
    /// `rows`, in one transaction: a batch's rows were inserted together, so usually once.
    fn set_state(&mut self, rows: &[i64], sql: &str) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut sorted = rows.to_vec();
        sorted.sort_unstable();
        let tx = self.db.transaction().map_err(err)?;
        {
            let mut stmt = tx.prepare_cached(sql).map_err(err)?;
            for (first, last) in runs(&sorted) {
                stmt.execute(params![first, last]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

/// The runs of consecutive values in sorted `rows`, as (first, last).
fn runs(rows: &[i64]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &r in rows {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == r || *last == r => *last = r,
            _ => out.push((r, r)),
        }
    }
    out
}

const COLUMNS: &str = "row_id, tube, pri, ttr, due_ms, body, server_id, server_instance, state";

impl Store for Sqlite {
    fn insert(&mut self, jobs: &[NewJob]) -> Result<Vec<i64>, StoreError> {
        let tx = self.db.transaction().map_err(err)?;
        let mut ids = Vec::with_capacity(jobs.len());
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO fanout_jobs (tube, pri, ttr, due_ms, body, server_id, server_instance, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending')",
                )
                .map_err(err)?;
            for j in jobs {
                stmt.execute(params![
                    j.tube,
                    j.pri,
                    j.ttr,
                    j.due_ms,
                    j.body,
                    j.server_id as i64,
                    j.server_instance
                ])
                .map_err(err)?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    fn mark_archived(&mut self, rows: &[i64]) -> Result<(), StoreError> {
        self.set_state(
            rows,
            "UPDATE fanout_jobs SET state = 'archived' WHERE row_id BETWEEN ?1 AND ?2",
        )
    }

    fn remove(&mut self, rows: &[i64]) -> Result<(), StoreError> {
        self.set_state(
            rows,
            "DELETE FROM fanout_jobs WHERE row_id BETWEEN ?1 AND ?2",
        )
    }

    fn discard_pending(&mut self, rows: &[i64]) -> Result<(), StoreError> {
        self.set_state(
            rows,
            "DELETE FROM fanout_jobs WHERE row_id BETWEEN ?1 AND ?2 AND state = 'pending'",
        )
    }

    fn pending(&mut self) -> Result<Vec<Row>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM fanout_jobs WHERE state = 'pending' ORDER BY row_id");
        let mut stmt = self.db.prepare(&sql).map_err(err)?;
        let rows = stmt
            .query_map([], Sqlite::row)
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        Ok(rows)
    }

    fn claim_due(
        &mut self,
        owner: &str,
        now_ms: i64,
        lead: Duration,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let by = now_ms + lead.as_millis() as i64;
        let until = now_ms + hold.as_millis() as i64;
        // IMMEDIATE: the write lock from the start, so two proxies on one file never both read
        // the same free rows before either claims them.
        let tx = self
            .db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let rows = {
            let sql = format!(
                "SELECT {COLUMNS} FROM fanout_jobs
                 WHERE state = 'archived' AND due_ms <= ?1
                   AND (claimed_by IS NULL OR claimed_by = ?2 OR claim_until_ms <= ?3)
                 ORDER BY due_ms, row_id LIMIT ?4"
            );
            let mut stmt = tx.prepare_cached(&sql).map_err(err)?;
            let rows = stmt
                .query_map(params![by, owner, now_ms, limit as i64], Sqlite::row)
                .map_err(err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            let mut claim = tx
                .prepare_cached(
                    "UPDATE fanout_jobs SET claimed_by = ?1, claim_until_ms = ?2 WHERE row_id = ?3",
                )
                .map_err(err)?;
            for r in &rows {
                claim.execute(params![owner, until, r.row]).map_err(err)?;
            }
            rows
        };
        tx.commit().map_err(err)?;
        Ok(rows)
    }

    fn counts(&mut self, now_ms: i64, lead: Duration) -> Result<Counts, StoreError> {
        let by = now_ms + lead.as_millis() as i64;
        let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u64, StoreError> {
            self.db
                .query_row(sql, p, |r| r.get::<_, i64>(0))
                .optional()
                .map_err(err)
                .map(|n| n.unwrap_or(0) as u64)
        };
        Ok(Counts {
            pending: count(
                "SELECT COUNT(*) FROM fanout_jobs WHERE state = 'pending'",
                &[],
            )?,
            archived: count(
                "SELECT COUNT(*) FROM fanout_jobs WHERE state = 'archived'",
                &[],
            )?,
            due: count(
                "SELECT COUNT(*) FROM fanout_jobs WHERE state = 'archived' AND due_ms <= ?1",
                &[&by],
            )?,
            claimed: count(
                "SELECT COUNT(*) FROM fanout_jobs WHERE claimed_by IS NOT NULL AND claim_until_ms > ?1",
                &[&now_ms],
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_fold_into_runs_of_consecutive_ids() {
        assert_eq!(super::runs(&[]), []);
        assert_eq!(
            super::runs(&[3, 4, 5, 9, 11, 12]),
            [(3, 5), (9, 9), (11, 12)]
        );
        assert_eq!(super::runs(&[7, 7, 8]), [(7, 8)]);
    }
}
