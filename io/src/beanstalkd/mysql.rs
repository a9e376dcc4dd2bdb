//! The archive on MySQL or MariaDB (`mysql://USER[:PASS]@HOST:PORT/DB[?table=NAME]`), InnoDB.
//! Every change is a committed transaction; re-injectors of several proxies claim rows with
//! `FOR UPDATE SKIP LOCKED` (MySQL 8, MariaDB 10.6), so each due row goes to one of them.

use super::store::{Counts, NewJob, Row, RowState, Store, StoreError};
use mysql::prelude::Queryable;
use mysql::{params, Conn, Opts, TxOpts};
use std::time::Duration;

pub struct Mysql {
    db: Conn,
    table: String,
}

impl std::fmt::Debug for Mysql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mysql").field("table", &self.table).finish()
    }
}

fn err(e: mysql::Error) -> StoreError {
    StoreError(e.to_string())
}

type Columns = (i64, String, i64, i64, i64, Vec<u8>, u64, String, String);

fn row((row, tube, pri, ttr, due_ms, body, server_id, server_instance, state): Columns) -> Row {
    Row {
        row,
        job: NewJob {
            tube,
            pri: pri as u32,
            ttr: ttr as u32,
            due_ms,
            body,
            server_id,
            server_instance,
        },
        state: if state == "pending" {
            RowState::Pending
        } else {
            RowState::Archived
        },
    }
}

const COLUMNS: &str = "row_id, tube, pri, ttr, due_ms, body, server_id, server_instance, state";

impl Mysql {
    /// Connects (`url` without the `?table=` part) and creates the table if need be.
    pub fn open(url: &str, table: &str) -> Result<Mysql, StoreError> {
        let opts = Opts::from_url(url).map_err(|e| StoreError(format!("{url}: {e}")))?;
        let mut db =
            Conn::new(opts).map_err(|e| StoreError(format!("cannot connect to {url}: {e}")))?;
        db.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                row_id BIGINT AUTO_INCREMENT PRIMARY KEY,
                tube VARCHAR(200) NOT NULL,
                pri BIGINT NOT NULL,
                ttr BIGINT NOT NULL,
                due_ms BIGINT NOT NULL,
                body LONGBLOB NOT NULL,
                server_id BIGINT UNSIGNED NOT NULL,
                server_instance VARCHAR(64) NOT NULL,
                state VARCHAR(16) NOT NULL,
                claimed_by VARCHAR(128),
                claim_until_ms BIGINT,
                INDEX {table}_due (state, due_ms)
            ) ENGINE=InnoDB"
        ))
        .map_err(err)?;
        Ok(Mysql {
            db,
            table: table.to_string(),
        })
    }

    fn each(&mut self, rows: &[i64], sql: &str) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.start_transaction(TxOpts::default()).map_err(err)?;
        tx.exec_batch(sql, rows.iter().map(|r| (r,))).map_err(err)?;
        tx.commit().map_err(err)
    }
}

impl Store for Mysql {
    fn insert(&mut self, jobs: &[NewJob]) -> Result<Vec<i64>, StoreError> {
        let sql = format!(
            "INSERT INTO {} (tube, pri, ttr, due_ms, body, server_id, server_instance, state)
             VALUES (:tube, :pri, :ttr, :due_ms, :body, :server_id, :server_instance, 'pending')",
            self.table
        );
        let mut tx = self.db.start_transaction(TxOpts::default()).map_err(err)?;
        let mut ids = Vec::with_capacity(jobs.len());
        for j in jobs {
            tx.exec_drop(
                &sql,
                params! {
                    "tube" => &j.tube,
                    "pri" => i64::from(j.pri),
                    "ttr" => i64::from(j.ttr),
                    "due_ms" => j.due_ms,
                    "body" => &j.body,
                    "server_id" => j.server_id,
                    "server_instance" => &j.server_instance,
                },
            )
            .map_err(err)?;
            ids.push(tx.last_insert_id().unwrap_or(0) as i64);
        }
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    fn mark_archived(&mut self, rows: &[i64]) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE {} SET state = 'archived' WHERE row_id = ?",
            self.table
        );
        self.each(rows, &sql)
    }

    fn remove(&mut self, rows: &[i64]) -> Result<(), StoreError> {
        let sql = format!("DELETE FROM {} WHERE row_id = ?", self.table);
        self.each(rows, &sql)
    }

    fn discard_pending(&mut self, rows: &[i64]) -> Result<(), StoreError> {
        let sql = format!(
            "DELETE FROM {} WHERE row_id = ? AND state = 'pending'",
            self.table
        );
        self.each(rows, &sql)
    }

    fn pending(&mut self) -> Result<Vec<Row>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE state = 'pending' ORDER BY row_id",
            self.table
        );
        self.db.query_map(sql, row).map_err(err)
    }

    fn claim_due(
        &mut self,
        owner: &str,
        now_ms: i64,
        lead: Duration,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let t = self.table.clone();
        let by = now_ms + lead.as_millis() as i64;
        let until = now_ms + hold.as_millis() as i64;
        let mut tx = self.db.start_transaction(TxOpts::default()).map_err(err)?;
        let rows: Vec<Row> = tx
            .exec_map(
                format!(
                    "SELECT {COLUMNS} FROM {t}
                     WHERE state = 'archived' AND due_ms <= ?
                       AND (claimed_by IS NULL OR claimed_by = ? OR claim_until_ms <= ?)
                     ORDER BY due_ms, row_id LIMIT ? FOR UPDATE SKIP LOCKED"
                ),
                (by, owner, now_ms, limit as u64),
                row,
            )
            .map_err(err)?;
        tx.exec_batch(
            format!("UPDATE {t} SET claimed_by = ?, claim_until_ms = ? WHERE row_id = ?"),
            rows.iter().map(|r| (owner, until, r.row)),
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(rows)
    }

    fn counts(&mut self, now_ms: i64, lead: Duration) -> Result<Counts, StoreError> {
        let by = now_ms + lead.as_millis() as i64;
        let got: Option<(i64, i64, i64, i64)> = self
            .db
            .exec_first(
                format!(
                    "SELECT
                       COALESCE(SUM(state = 'pending'), 0),
                       COALESCE(SUM(state = 'archived'), 0),
                       COALESCE(SUM(state = 'archived' AND due_ms <= ?), 0),
                       COALESCE(SUM(claimed_by IS NOT NULL AND claim_until_ms > ?), 0)
                     FROM {}",
                    self.table
                ),
                (by, now_ms),
            )
            .map_err(err)?;
        let (p, a, d, c) = got.unwrap_or_default();
        Ok(Counts {
            pending: p as u64,
            archived: a as u64,
            due: d as u64,
            claimed: c as u64,
        })
    }
}
