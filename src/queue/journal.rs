//! The queue's journal on disk: SQLite in WAL mode with `synchronous=FULL`.
//!
//! Why SQLite (through `rusqlite`) and not `redb`: it is the most tested
//! embedded store there is, its crash safety is documented down to the
//! fsync, an operator can open the journal with the `sqlite3` shell to see
//! what is stuck, and WAL mode makes a commit one sequential append and one
//! fsync, which is what group commit needs.
//!
//! One row per accepted order, replaced on every change; created orders
//! beyond the configured history are deleted (their count is kept), so the
//! file follows the number of orders in flight, not the traffic. One process
//! owns a journal at a time: the owner holds an exclusive lock on a
//! `.lock` file beside it, and a second process with the same node id runs
//! with an in-memory queue instead.

use super::{OrderStatus, RecoveredQueue, SettledCounts, StoredOrder};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default directory for journals.
pub const DEFAULT_DATA_DIR: &str = "./grace-data";

/// Where the queue's rows go, as `get_status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalInfo {
    /// Whether a "queued" reply means the request is on disk.
    pub durable: bool,
    /// The journal file, when there is one.
    pub path: Option<PathBuf>,
    /// Why the queue is in memory, when it is.
    pub degraded_reason: Option<String>,
}

impl JournalInfo {
    /// No journal: the queue lives in memory only.
    pub fn in_memory(reason: impl Into<String>) -> Self {
        JournalInfo {
            durable: false,
            path: None,
            degraded_reason: Some(reason.into()),
        }
    }
}

/// A journal that could not be opened or written.
#[derive(Debug)]
pub struct JournalError(pub String);

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<rusqlite::Error> for JournalError {
    fn from(err: rusqlite::Error) -> Self {
        JournalError(format!("journal: {err}"))
    }
}

/// An open, locked SQLite journal.
pub struct SqliteJournal {
    conn: Connection,
    path: PathBuf,
    /// Held for the life of the journal: the exclusive lock is the ownership.
    _lock: File,
    order_history: usize,
    settled_since_compaction: usize,
}

/// Keeps a node id usable as a file name.
fn file_stem(node_id: &str) -> String {
    let stem: String = node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() { "node".into() } else { stem }
}

/// The journal file for `node_id` under `data_dir`.
pub fn journal_path(data_dir: &Path, node_id: &str) -> PathBuf {
    data_dir.join(format!("{}.journal.sqlite", file_stem(node_id)))
}

impl SqliteJournal {
    /// Opens (creating if needed) and locks the journal of `node_id`, and
    /// reads back everything committed so far.
    pub fn open(
        data_dir: &Path,
        node_id: &str,
        order_history: usize,
    ) -> Result<(Self, RecoveredQueue), JournalError> {
        fs::create_dir_all(data_dir).map_err(|err| {
            JournalError(format!(
                "cannot create data dir {}: {err}",
                data_dir.display()
            ))
        })?;
        let path = journal_path(data_dir, node_id);
        let lock_path = path.with_extension("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|err| JournalError(format!("cannot open {}: {err}", lock_path.display())))?;
        lock.try_lock().map_err(|_| {
            JournalError(format!(
                "{} is locked by another grace process with node id {node_id:?}",
                path.display()
            ))
        })?;
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS orders (
                 request_id INTEGER PRIMARY KEY,
                 idempotency_key TEXT,
                 order_json TEXT,
                 status TEXT NOT NULL,
                 attempts INTEGER NOT NULL,
                 order_id TEXT,
                 was_queued INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS meta (
                 name TEXT PRIMARY KEY,
                 value INTEGER NOT NULL
             );",
        )?;
        let mut journal = SqliteJournal {
            conn,
            path,
            _lock: lock,
            order_history: order_history.max(1),
            settled_since_compaction: 0,
        };
        let mut recovered = journal.load()?;
        recovered.epoch = journal.conn.query_row(
            "INSERT INTO meta (name, value) VALUES ('epoch', 1)
             ON CONFLICT(name) DO UPDATE SET value = value + 1
             RETURNING value",
            [],
            |row| row.get::<_, i64>(0),
        )? as u64;
        Ok((journal, recovered))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&mut self) -> Result<RecoveredQueue, JournalError> {
        let meta = |name: &str| -> Result<u64, rusqlite::Error> {
            let value: Option<i64> = self
                .conn
                .query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
                    row.get(0)
                })
                .optional()?;
            Ok(value.unwrap_or(0) as u64)
        };
        let compacted = SettledCounts {
            processed: meta("compacted_processed")?,
            dead_letters: meta("compacted_dead_letters")?,
        };
        let mut statement = self.conn.prepare(
            "SELECT request_id, idempotency_key, order_json, status, attempts, order_id, was_queued
             FROM orders ORDER BY request_id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)? as u64,
                row.get::<_, Option<String>>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, u32>(4)?,
                row.get::<_, Option<String>>(5)?,
                row.get::<_, bool>(6)?,
            ))
        })?;
        let mut orders = Vec::new();
        for row in rows {
            let (request_id, idempotency_key, order_json, status, attempts, order_id, was_queued) =
                row?;
            let status = match status.as_str() {
                "queued" => OrderStatus::Queued,
                "created" => OrderStatus::Created,
                "dead_letter" => OrderStatus::DeadLetter,
                other => {
                    return Err(JournalError(format!(
                        "journal row {request_id} has unknown status {other:?}"
                    )));
                }
            };
            let order = order_json
                .map(|json| RawValue::from_string(json).map(Arc::from))
                .transpose()
                .map_err(|err| JournalError(format!("journal row {request_id}: {err}")))?;
            orders.push(StoredOrder {
                request_id,
                idempotency_key,
                order,
                status,
                attempts,
                order_id,
                was_queued,
            });
        }
        Ok(RecoveredQueue::from_rows(orders, compacted, 0))
    }

    /// Writes `rows` in one transaction: one fsync however many rows.
    pub fn commit(&mut self, rows: &[StoredOrder]) -> Result<(), JournalError> {
        if rows.is_empty() {
            return Ok(());
        }
        let transaction = self.conn.transaction()?;
        {
            let mut upsert = transaction.prepare_cached(
                "INSERT OR REPLACE INTO orders
                 (request_id, idempotency_key, order_json, status, attempts, order_id, was_queued)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for row in rows {
                upsert.execute(params![
                    row.request_id as i64,
                    row.idempotency_key,
                    row.order.as_ref().map(|order| order.get()),
                    row.status.as_str(),
                    row.attempts,
                    row.order_id,
                    row.was_queued,
                ])?;
            }
        }
        self.settled_since_compaction += rows
            .iter()
            .filter(|row| row.status != OrderStatus::Queued)
            .count();
        if self.settled_since_compaction > (self.order_history / 10).max(1000) {
            compact(&transaction, self.order_history)?;
            self.settled_since_compaction = 0;
        }
        transaction.commit()?;
        Ok(())
    }

    /// Deletes created orders beyond the history now; normally this happens
    /// on its own every so many commits.
    pub fn compact_now(&mut self) -> Result<(), JournalError> {
        let transaction = self.conn.transaction()?;
        compact(&transaction, self.order_history)?;
        transaction.commit()?;
        Ok(())
    }

    /// Rows in the journal, for tests and operators.
    pub fn row_count(&self) -> Result<u64, JournalError> {
        let rows: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM orders", [], |row| row.get(0))?;
        Ok(rows as u64)
    }
}

/// Deletes all but the newest `keep` settled (created or dead-lettered)
/// orders, adding them to the kept counts. Queued rows are never deleted.
/// Dead letters outlive `keep` newer settled orders before they go, and
/// their going is logged: never silent.
fn compact(transaction: &rusqlite::Transaction<'_>, keep: usize) -> Result<(), JournalError> {
    let cutoff: Option<i64> = transaction
        .query_row(
            "SELECT request_id FROM orders WHERE status != 'queued'
             ORDER BY request_id DESC LIMIT 1 OFFSET ?1",
            [keep as i64],
            |row| row.get(0),
        )
        .optional()?;
    let Some(cutoff) = cutoff else {
        return Ok(());
    };
    let count = |condition: &str| -> Result<i64, rusqlite::Error> {
        transaction.query_row(
            &format!("SELECT COUNT(*) FROM orders WHERE request_id <= ?1 AND {condition}"),
            [cutoff],
            |row| row.get(0),
        )
    };
    let processed = count("status = 'created' AND was_queued")?;
    let dead_letters = count("status = 'dead_letter'")?;
    for (name, compacted) in [
        ("compacted_processed", processed),
        ("compacted_dead_letters", dead_letters),
    ] {
        transaction.execute(
            "INSERT INTO meta (name, value) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET value = value + ?2",
            rusqlite::params![name, compacted],
        )?;
    }
    transaction.execute(
        "DELETE FROM orders WHERE status != 'queued' AND request_id <= ?1",
        [cutoff],
    )?;
    if dead_letters > 0 {
        tracing::warn!(
            dead_letters,
            "compaction removed dead letters older than the last --order-history settled orders"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(request_id: u64, status: OrderStatus) -> StoredOrder {
        StoredOrder {
            request_id,
            idempotency_key: Some(format!("client:{request_id}")),
            order: (status != OrderStatus::Created)
                .then(|| Arc::from(RawValue::from_string("{\"sku\":1}".into()).unwrap())),
            status,
            attempts: 0,
            order_id: (status == OrderStatus::Created).then(|| format!("ord-{request_id}")),
            was_queued: true,
        }
    }

    #[test]
    fn committed_rows_are_recovered_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut journal, recovered) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
            assert!(recovered.orders.is_empty());
            journal
                .commit(&[row(1, OrderStatus::Queued), row(2, OrderStatus::Queued)])
                .unwrap();
            journal.commit(&[row(1, OrderStatus::Created)]).unwrap();
        }
        let (_journal, recovered) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        assert_eq!(
            recovered.orders,
            vec![row(1, OrderStatus::Created), row(2, OrderStatus::Queued)]
        );
        assert_eq!(recovered.processed, 1);
    }

    #[test]
    fn each_opening_has_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let epochs: Vec<u64> = (0..3)
            .map(|_| SqliteJournal::open(dir.path(), "n1", 100).unwrap().1.epoch)
            .collect();
        assert_eq!(epochs, vec![1, 2, 3]);
    }

    #[test]
    fn second_owner_of_the_same_node_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_first, _) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        let second = SqliteJournal::open(dir.path(), "n1", 100);
        assert!(second.err().unwrap().0.contains("locked"));
        assert!(SqliteJournal::open(dir.path(), "n2", 100).is_ok());
    }

    #[test]
    fn compaction_keeps_pending_and_the_newest_settled_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = SqliteJournal::open(dir.path(), "n1", 2).unwrap();
        use OrderStatus::{Created, DeadLetter, Queued};
        let statuses = [
            Created, DeadLetter, Created, Created, Created, Queued, DeadLetter, Queued,
        ];
        let rows: Vec<StoredOrder> = (1..)
            .zip(statuses)
            .map(|(id, status)| row(id, status))
            .collect();
        journal.commit(&rows).unwrap();
        journal.compact_now().unwrap();
        drop(journal);
        let (_journal, recovered) = SqliteJournal::open(dir.path(), "n1", 2).unwrap();
        let ids: Vec<u64> = recovered.orders.iter().map(|o| o.request_id).collect();
        // Queued 6 and 8 stay; of the settled, the newest two (5, 7).
        assert_eq!(ids, vec![5, 6, 7, 8]);
        assert_eq!(recovered.processed, 4, "1, 3, 4 and 5 were delivered");
        assert_eq!(recovered.dead_letters, 2, "2 was compacted, 7 is held");
    }

    #[test]
    fn node_ids_become_safe_file_names() {
        let path = journal_path(Path::new("/d"), "../n 1");
        assert_eq!(path, Path::new("/d/___n_1.journal.sqlite"));
    }
}
