//! The archive on PostgreSQL (`postgres://USER@HOST:PORT/DB[?table=NAME]`). Every change is a
//! committed transaction; re-injectors of several proxies claim rows with
//! `FOR UPDATE SKIP LOCKED`, so each due row goes to one of them.

use super::store::{Counts, NewJob, Row, RowState, Store, StoreError};
use postgres::{Client, NoTls};
use std::time::Duration;

pub struct Postgres {
    db: Client,
    table: String,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("table", &self.table)
            .finish()
    }
}

fn err(e: postgres::Error) -> StoreError {
    StoreError(e.to_string())
}

fn row(r: &postgres::Row) -> Row {
    let state: String = r.get(8);
    Row {
        row: r.get(0),
        job: NewJob {
            tube: r.get(1),
            pri: r.get::<_, i64>(2) as u32,
            ttr: r.get::<_, i64>(3) as u32,
            due_ms: r.get(4),
            body: r.get(5),
            server_id: r.get::<_, i64>(6) as u64,
            server_instance: r.get(7),
        },
        state: if state == "pending" {
            RowState::Pending
        } else {
            RowState::Archived
        },
    }
}

const COLUMNS: &str = "row_id, tube, pri, ttr, due_ms, body, server_id, server_instance, state";

impl Postgres {
    /// Connects (`url` without the `?table=` part) and creates the table if need be.
    pub fn open(url: &str, table: &str) -> Result<Postgres, StoreError> {
        let mut db = Client::connect(url, NoTls)
            .map_err(|e| StoreError(format!("cannot connect to {url}: {e}")))?;
        db.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                row_id BIGSERIAL PRIMARY KEY,
                tube TEXT NOT NULL,
                pri BIGINT NOT NULL,
                ttr BIGINT NOT NULL,
                due_ms BIGINT NOT NULL,
                body BYTEA NOT NULL,
                server_id BIGINT NOT NULL,
                server_instance TEXT NOT NULL,
                state TEXT NOT NULL,
                claimed_by TEXT,
                claim_until_ms BIGINT
            );
            CREATE INDEX IF NOT EXISTS {table}_due ON {table} (state, due_ms);"
        ))
        .map_err(err)?;
        Ok(Postgres {
            db,
            table: table.to_string(),
        })
    }

    fn each(&mut self, rows: &[i64], sql: &str) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.transaction().map_err(err)?;
        tx.execute(sql, &[&rows]).map_err(err)?;
        tx.commit().map_err(err)
    }
}

impl Store for Postgres {
    fn insert(&mut self, jobs: &[NewJob]) -> Result<Vec<i64>, StoreError> {
        let t = &self.table;
        let mut tx = self.db.transaction().map_err(err)?;
        let stmt = tx
            .prepare(&format!(
                "INSERT INTO {t} (tube, pri, ttr, due_ms, body, server_id, server_instance, state)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') RETURNING row_id"
            ))
            .map_err(err)?;
        let mut ids = Vec::with_capacity(jobs.len());
        for j in jobs {
            let r = tx
                .query_one(
                    &stmt,
                    &[
                        &j.tube,
                        &i64::from(j.pri),
                        &i64::from(j.ttr),
                        &j.due_ms,
                        &j.body,
                        &(j.server_id as i64),
                        &j.server_instance,
                    ],
                )
                .map_err(err)?;
            ids.push(r.get(0));
        }
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    fn mark_archived(&mut self, rows: &[i64]) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE {} SET state = 'archived' WHERE row_id = ANY($1)",
            self.table
        );
        self.each(rows, &sql)
    }

    fn remove(&mut self, rows: &[i64]) -> Result<(), StoreError> {
        let sql = format!("DELETE FROM {} WHERE row_id = ANY($1)", self.table);
        self.each(rows, &sql)
    }

    fn discard_pending(&mut self, rows: &[i64]) -> Result<(), StoreError> {
        let sql = format!(
            "DELETE FROM {} WHERE row_id = ANY($1) AND state = 'pending'",
            self.table
        );
        self.each(rows, &sql)
    }

    fn pending(&mut self) -> Result<Vec<Row>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE state = 'pending' ORDER BY row_id",
            self.table
        );
        Ok(self
            .db
            .query(&sql, &[])
            .map_err(err)?
            .iter()
            .map(row)
            .collect())
    }

    fn claim_due(
        &mut self,
        owner: &str,
        now_ms: i64,
        lead: Duration,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let t = &self.table;
        let by = now_ms + lead.as_millis() as i64;
        let until = now_ms + hold.as_millis() as i64;
        let mut tx = self.db.transaction().map_err(err)?;
        let rows: Vec<Row> = tx
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM {t}
                     WHERE state = 'archived' AND due_ms <= $1
                       AND (claimed_by IS NULL OR claimed_by = $2 OR claim_until_ms <= $3)
                     ORDER BY due_ms, row_id LIMIT $4 FOR UPDATE SKIP LOCKED"
                ),
                &[&by, &owner, &now_ms, &(limit as i64)],
            )
            .map_err(err)?
            .iter()
            .map(row)
            .collect();
        let ids: Vec<i64> = rows.iter().map(|r| r.row).collect();
        tx.execute(
            &format!("UPDATE {t} SET claimed_by = $1, claim_until_ms = $2 WHERE row_id = ANY($3)"),
            &[&owner, &until, &ids],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(rows)
    }

    fn counts(&mut self, now_ms: i64, lead: Duration) -> Result<Counts, StoreError> {
        let t = &self.table;
        let by = now_ms + lead.as_millis() as i64;
        let r = self
            .db
            .query_one(
                &format!(
                    "SELECT
                       COUNT(*) FILTER (WHERE state = 'pending'),
                       COUNT(*) FILTER (WHERE state = 'archived'),
                       COUNT(*) FILTER (WHERE state = 'archived' AND due_ms <= $1),
                       COUNT(*) FILTER (WHERE claimed_by IS NOT NULL AND claim_until_ms > $2)
                     FROM {t}"
                ),
                &[&by, &now_ms],
            )
            .map_err(err)?;
        let n = |i: usize| r.get::<_, i64>(i) as u64;
        Ok(Counts {
            pending: n(0),
            archived: n(1),
            due: n(2),
            claimed: n(3),
        })
    }
}
