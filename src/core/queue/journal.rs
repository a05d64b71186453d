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
//! `.lock` file beside it.
//!
//! Opening is where a journal can turn out not to be what it should, and
//! none of those cases may lose an acknowledged order silently
//! ([`open_journal`]):
//! - each node id has its own file ([`journal_path`]: a one-to-one escaping
//!   with a bounded length), and the journal records the full node id and
//!   refuses any other;
//! - a file that fails SQLite's integrity check is moved aside, never
//!   overwritten, the rows that can still be read are salvaged into a fresh
//!   journal, and the operator is told where the damaged file went;
//! - a journal in a directory that cannot be written is read read-only, so
//!   the orders on it stay visible;
//! - every row read is validated; a bad one is reported and skipped, and its
//!   request id is never handed out again.

use super::{RecoveredQueue, RequestId, SettledCounts, StoredResponse, StoredWrite, WriteStatus};
use rusqlite::config::DbConfig;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::value::RawValue;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Default directory for journals.
pub const DEFAULT_DATA_DIR: &str = "./grace-data";
/// What follows the escaped node id in a journal's file name.
const JOURNAL_SUFFIX: &str = ".journal.sqlite";
/// Longest escaped node id used whole in a file name. With the suffix, a
/// `.corrupt-<timestamp>` and `-wal`, names stay far below the usual 255
/// byte limit.
const MAX_STEM_BYTES: usize = 128;
/// How much of a longer escaped node id is kept before its hash.
const LONG_STEM_PREFIX_BYTES: usize = 100;
/// Separates a long node id's prefix from its hash; escaping never
/// produces it, so a long id's name cannot equal a short id's.
const LONG_STEM_SEPARATOR: char = '~';
/// The file name of the empty node id: escaping never produces a lone `%`.
const EMPTY_NODE_ID_STEM: &str = "%";
/// The columns every journal row has had since the first release, in the
/// order [`decode_row`] reads them. `order_json` holds any write's payload
/// and `order_id` the id its service gave it: the names are the Maelstrom
/// node's, kept so that older journals open as they are.
const ORDER_COLUMNS: &str =
    "request_id, idempotency_key, order_json, status, attempts, order_id, was_queued";
/// Columns added when the gateway came (with their SQL types), read after
/// [`ORDER_COLUMNS`]. A journal written before them is given them when it is
/// opened for writing; read-only, they read as NULL.
const WRITE_COLUMNS: [(&str, &str); 6] = [
    ("service", "TEXT"),
    ("public_id", "TEXT"),
    ("fingerprint", "TEXT"),
    ("response_status", "INTEGER"),
    ("response_content_type", "TEXT"),
    ("response_body", "BLOB"),
];
/// The service of rows written before rows named theirs: the Maelstrom
/// node's order service, the only one that queued then.
const SERVICE_OF_OLD_ROWS: &str = "order";

/// Where the queue's rows go, as `get_status` reports it and as the
/// handlers need to know it to promise no more than it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalInfo {
    /// Whether a "queued" reply means the request is on disk.
    pub durable: bool,
    /// The journal file, when one was read.
    pub path: Option<PathBuf>,
    /// Why the queue is not durable, when it is not.
    pub degraded_reason: Option<String>,
    /// What becomes of an order that has to wait while the queue is not
    /// durable.
    pub unjournaled_orders: UnjournaledOrders,
    /// Whether the orders earlier runs committed were all read.
    pub earlier_orders: EarlierOrders,
}

/// What becomes of an order that has to wait while no journal can be
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnjournaledOrders {
    /// Refused with code 11: a "queued" reply would promise what is not on
    /// disk.
    Refused,
    /// Queued in memory, every reply saying `"durable": false` (the operator
    /// asked for it with `--volatile-queue`).
    KeptInMemory,
}

impl UnjournaledOrders {
    /// What `--volatile-queue` asks for.
    pub fn when_volatile(volatile_queue: bool) -> Self {
        if volatile_queue {
            UnjournaledOrders::KeptInMemory
        } else {
            UnjournaledOrders::Refused
        }
    }
}

/// Whether the node has seen every order committed under its node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlierOrders {
    /// The journal was read, or none exists: an unknown order id is a
    /// definite "does not exist".
    Visible,
    /// A journal exists that could not be read: an unknown order id may be
    /// in it.
    Unseen,
}

impl JournalInfo {
    /// Rows are committed to `path` before any reply promises them.
    pub fn durable(path: Option<PathBuf>) -> Self {
        JournalInfo {
            durable: true,
            path,
            degraded_reason: None,
            unjournaled_orders: UnjournaledOrders::Refused,
            earlier_orders: EarlierOrders::Visible,
        }
    }

    /// No journal at all (a node driven without one, as in tests): the queue
    /// lives in memory and says so in its replies.
    pub fn in_memory(reason: impl Into<String>) -> Self {
        JournalInfo {
            durable: false,
            path: None,
            degraded_reason: Some(reason.into()),
            unjournaled_orders: UnjournaledOrders::KeptInMemory,
            earlier_orders: EarlierOrders::Visible,
        }
    }

    /// No journal can be written, for `reason`; `path` is the journal that
    /// was read anyway, if any.
    pub fn not_durable(
        path: Option<PathBuf>,
        reason: impl Into<String>,
        earlier_orders: EarlierOrders,
        unjournaled_orders: UnjournaledOrders,
    ) -> Self {
        JournalInfo {
            durable: false,
            path,
            degraded_reason: Some(reason.into()),
            unjournaled_orders,
            earlier_orders,
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

/// What opening the journal of a node id found.
pub enum JournalOpening {
    /// Open, locked and writable: every row is committed before a reply
    /// promises it.
    Writable {
        journal: SqliteJournal,
        recovered: RecoveredQueue,
    },
    /// On disk and read, but it cannot be written (`reason`).
    ReadOnly {
        path: PathBuf,
        recovered: RecoveredQueue,
        reason: String,
    },
    /// No journal could be read (`reason`).
    Unavailable {
        reason: String,
        earlier_orders: EarlierOrders,
    },
}

/// A journal opened for a front door: the journal itself when it can be
/// written, what may be promised with it, and what it held.
pub struct Opened {
    pub journal: Option<SqliteJournal>,
    pub info: JournalInfo,
    pub recovered: RecoveredQueue,
}

/// Opens the journal of `node_id` for a front door, and says on stderr what
/// it means when it cannot be written: writes that have to wait are refused
/// (or, with `--volatile-queue`, kept in memory), and an order it cannot
/// see is never said not to exist.
pub fn open_for(
    data_dir: &Path,
    node_id: &str,
    order_history: usize,
    unjournaled: UnjournaledOrders,
) -> Opened {
    let (info, recovered) = match open_journal(data_dir, node_id, order_history) {
        JournalOpening::Writable { journal, recovered } => {
            tracing::info!(journal = %journal.path().display(), "durable queue opened");
            let info = JournalInfo::durable(Some(journal.path().to_path_buf()));
            return Opened {
                journal: Some(journal),
                info,
                recovered,
            };
        }
        JournalOpening::ReadOnly {
            path,
            recovered,
            reason,
        } => {
            let info =
                JournalInfo::not_durable(Some(path), reason, EarlierOrders::Visible, unjournaled);
            (info, recovered)
        }
        JournalOpening::Unavailable {
            reason,
            earlier_orders,
        } => (
            JournalInfo::not_durable(None, reason, earlier_orders, unjournaled),
            RecoveredQueue::default(),
        ),
    };
    let reason = info.degraded_reason.as_deref().unwrap_or_default();
    match unjournaled {
        UnjournaledOrders::Refused => tracing::warn!(
            "queue is not durable: {reason}; writes the service cannot take now are refused \
             (--volatile-queue keeps them in memory instead)"
        ),
        UnjournaledOrders::KeptInMemory => tracing::warn!(
            "queue is not durable: {reason}; --volatile-queue: writes the service cannot take \
             now are kept in memory only, lost at exit"
        ),
    }
    if info.earlier_orders == EarlierOrders::Unseen {
        tracing::warn!(
            "writes in the journal cannot be seen: a write it does not know is never said not \
             to exist"
        );
    }
    Opened {
        journal: None,
        info,
        recovered,
    }
}

/// Opens the journal of `node_id` under `data_dir` as well as it can be
/// opened: writable if possible, else read-only, else not at all, and says
/// which. A damaged journal is moved aside and replaced (see the module
/// documentation); nothing on disk is ever overwritten or ignored.
pub fn open_journal(data_dir: &Path, node_id: &str, order_history: usize) -> JournalOpening {
    let path = journal_path(data_dir, node_id);
    report_old_name(data_dir, node_id, &path);
    if let Err(err) = fs::create_dir_all(data_dir) {
        // A directory that cannot be made holds no journal.
        return JournalOpening::Unavailable {
            reason: format!("cannot create data dir {}: {err}", data_dir.display()),
            earlier_orders: EarlierOrders::Visible,
        };
    }
    match lock(&path, node_id) {
        Err(failure) => failure.into_opening(),
        Ok(Lock::Exclusive(lock)) => open_writable(path, node_id, order_history, lock),
        Ok(Lock::ReadOnly { lock, why }) => {
            let opening = open_read_only(&path, node_id, why);
            drop(lock);
            opening
        }
    }
}

/// Why a journal could not be opened, by what follows from it.
enum OpenFailure {
    /// The file is not a sound journal: it is moved aside.
    Damaged(String),
    /// The journal cannot be written here: it is read read-only.
    NotWritable(String),
    /// It exists but cannot be read (locked by another process, owned by
    /// another node id, an I/O error): its orders are unseen.
    Unreadable(String),
}

impl OpenFailure {
    /// Sorts an SQLite error by what it means for the file.
    fn from_sqlite(err: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{
            CannotOpen, DatabaseCorrupt, NotADatabase, PermissionDenied, ReadOnly,
        };
        match err.sqlite_error_code() {
            Some(DatabaseCorrupt | NotADatabase) => OpenFailure::Damaged(err.to_string()),
            Some(ReadOnly | CannotOpen | PermissionDenied) => {
                OpenFailure::NotWritable(err.to_string())
            }
            _ => OpenFailure::Unreadable(err.to_string()),
        }
    }

    fn into_opening(self) -> JournalOpening {
        let reason = match self {
            OpenFailure::Damaged(reason)
            | OpenFailure::NotWritable(reason)
            | OpenFailure::Unreadable(reason) => reason,
        };
        JournalOpening::Unavailable {
            reason,
            earlier_orders: EarlierOrders::Unseen,
        }
    }
}

/// Ownership of a journal file.
enum Lock {
    /// This process owns the journal and may write it.
    Exclusive(File),
    /// The lock file cannot be written (`why`): the journal can only be
    /// read. The lock is held while reading, when it could be taken.
    ReadOnly { lock: Option<File>, why: String },
}

fn lock(path: &Path, node_id: &str) -> Result<Lock, OpenFailure> {
    let lock_path = path.with_extension("lock");
    let locked_by_another = || {
        OpenFailure::Unreadable(format!(
            "{} is locked by another grace process with node id {node_id:?}",
            path.display()
        ))
    };
    match File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
    {
        Ok(lock) => match lock.try_lock() {
            Ok(()) => Ok(Lock::Exclusive(lock)),
            Err(_) => Err(locked_by_another()),
        },
        Err(err) => {
            let why = format!("cannot write {}: {err}", lock_path.display());
            // A lock taken on a file opened for reading still keeps a
            // writer with more rights out while the journal is read.
            let lock = File::open(&lock_path).ok();
            if let Some(lock) = &lock
                && lock.try_lock().is_err()
            {
                return Err(locked_by_another());
            }
            Ok(Lock::ReadOnly { lock, why })
        }
    }
}

fn open_writable(path: PathBuf, node_id: &str, order_history: usize, lock: File) -> JournalOpening {
    let failure = match open_connection(&path, node_id) {
        Ok(conn) => return finish_writable(conn, path, lock, order_history, Salvage::default()),
        Err(failure) => failure,
    };
    match failure {
        OpenFailure::Damaged(reason) => {
            replace_damaged(path, node_id, order_history, lock, &reason)
        }
        OpenFailure::NotWritable(why) => {
            let opening = open_read_only(&path, node_id, why);
            drop(lock);
            opening
        }
        unreadable @ OpenFailure::Unreadable(_) => unreadable.into_opening(),
    }
}

/// Opens `path` for writing (creating it if needed) and checks that it is a
/// sound journal of `node_id`.
fn open_connection(path: &Path, node_id: &str) -> Result<Connection, OpenFailure> {
    let conn = Connection::open(path).map_err(OpenFailure::from_sqlite)?;
    // Until the file has passed its checks, closing the connection must not
    // checkpoint a write-ahead log into it or delete the log: a damaged
    // journal is moved aside as it was found.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(OpenFailure::from_sqlite)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(OpenFailure::from_sqlite)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(OpenFailure::from_sqlite)?;
    check_integrity(&conn)?;
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
         );
         CREATE TABLE IF NOT EXISTS node (
             id TEXT NOT NULL
         );",
    )
    .map_err(OpenFailure::from_sqlite)?;
    check_schema(&conn)?;
    add_write_columns(&conn).map_err(OpenFailure::from_sqlite)?;
    match stored_node_id(&conn)? {
        Some(stored) if stored == node_id => {}
        Some(stored) => return Err(foreign(path, &stored, node_id)),
        None => {
            conn.execute("INSERT INTO node (id) VALUES (?1)", [node_id])
                .map_err(OpenFailure::from_sqlite)?;
        }
    }
    // Sound: a clean exit folds the log into the main file again.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)
        .map_err(OpenFailure::from_sqlite)?;
    Ok(conn)
}

fn foreign(path: &Path, stored: &str, node_id: &str) -> OpenFailure {
    OpenFailure::Unreadable(format!(
        "{} belongs to node id {stored:?}, not {node_id:?}",
        path.display()
    ))
}

/// SQLite's own check of every page and b-tree (`PRAGMA quick_check`).
fn check_integrity(conn: &Connection) -> Result<(), OpenFailure> {
    let mut statement = conn
        .prepare("PRAGMA quick_check")
        .map_err(OpenFailure::from_sqlite)?;
    let problems: Vec<String> = statement
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|err| match OpenFailure::from_sqlite(err) {
            OpenFailure::Damaged(reason) => {
                OpenFailure::Damaged(format!("integrity check failed: {reason}"))
            }
            // An I/O error says nothing about the file's contents.
            other => other,
        })?;
    if problems == ["ok"] {
        Ok(())
    } else {
        Err(OpenFailure::Damaged(format!(
            "integrity check failed: {}",
            problems.join("; ")
        )))
    }
}

/// A file whose tables lack the journal's columns is not a journal.
fn check_schema(conn: &Connection) -> Result<(), OpenFailure> {
    conn.prepare(&format!("SELECT {ORDER_COLUMNS} FROM orders LIMIT 0"))
        .and_then(|_| conn.prepare("SELECT name, value FROM meta LIMIT 0"))
        .map(drop)
        .map_err(|err| OpenFailure::Damaged(format!("not a grace journal: {err}")))
}

/// Gives a journal written before [`WRITE_COLUMNS`] existed those columns.
fn add_write_columns(conn: &Connection) -> rusqlite::Result<()> {
    let present = existing_columns(conn)?;
    for (name, sql_type) in WRITE_COLUMNS {
        if !present.iter().any(|column| column == name) {
            conn.execute_batch(&format!("ALTER TABLE orders ADD COLUMN {name} {sql_type}"))?;
        }
    }
    Ok(())
}

fn existing_columns(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_info('orders')")?;
    let names = statement.query_map([], |row| row.get::<_, String>(0))?;
    names.collect()
}

/// The select list of a row: [`ORDER_COLUMNS`], then each of
/// [`WRITE_COLUMNS`], or NULL where the journal predates it.
fn row_columns(conn: &Connection) -> rusqlite::Result<String> {
    let present = existing_columns(conn)?;
    let mut columns = ORDER_COLUMNS.to_string();
    for (name, _) in WRITE_COLUMNS {
        columns.push_str(", ");
        if present.iter().any(|column| column == name) {
            columns.push_str(name);
        } else {
            columns.push_str("NULL");
        }
    }
    Ok(columns)
}

/// The node id recorded in the journal; `None` when it has none (a new
/// journal, or one written before node ids were recorded).
fn stored_node_id(conn: &Connection) -> Result<Option<String>, OpenFailure> {
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'node')",
            [],
            |row| row.get(0),
        )
        .map_err(OpenFailure::from_sqlite)?;
    if !has_table {
        return Ok(None);
    }
    let ids: Vec<SqlValue> = conn
        .prepare("SELECT id FROM node")
        .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
        .map_err(OpenFailure::from_sqlite)?;
    match ids.as_slice() {
        [] => Ok(None),
        [SqlValue::Text(id)] => Ok(Some(id.clone())),
        _ => Err(OpenFailure::Damaged(
            "the node table must hold exactly one text node id".into(),
        )),
    }
}

/// Builds the journal on an open connection, imports what was salvaged
/// from a damaged predecessor, and reads everything back.
fn finish_writable(
    conn: Connection,
    path: PathBuf,
    lock: File,
    order_history: usize,
    salvage: Salvage,
) -> JournalOpening {
    let mut journal = SqliteJournal {
        conn,
        path,
        _lock: lock,
        order_history: order_history.max(1),
        settled_since_compaction: 0,
    };
    let loaded = journal
        .import(&salvage)
        .and_then(|()| load(&journal.conn).map_err(JournalError::from));
    match loaded {
        Ok(recovered) => JournalOpening::Writable { journal, recovered },
        Err(err) => JournalOpening::Unavailable {
            reason: format!("{}: {err}", journal.path.display()),
            earlier_orders: EarlierOrders::Unseen,
        },
    }
}

/// Moves a journal that failed its check aside, salvages what can still be
/// read from it, and opens a fresh journal in its place.
fn replace_damaged(
    path: PathBuf,
    node_id: &str,
    order_history: usize,
    lock: File,
    reason: &str,
) -> JournalOpening {
    let moved = match move_aside(&path) {
        Ok(moved) => moved,
        Err(err) => {
            return JournalOpening::Unavailable {
                reason: format!(
                    "{} failed its integrity check ({reason}) and cannot be moved aside: {err}",
                    path.display()
                ),
                earlier_orders: EarlierOrders::Unseen,
            };
        }
    };
    tracing::error!(
        journal = %path.display(),
        moved_to = %moved.display(),
        %reason,
        "the journal failed its integrity check: moved aside, left as it was for the operator \
         (sqlite3 can read what remains of it); salvaging its readable rows into a fresh journal"
    );
    let salvage = salvage(&moved, node_id);
    tracing::warn!(
        salvaged = salvage.orders.len(),
        pending = salvage.pending(),
        skipped = salvage.skipped,
        stopped_by = salvage.stopped_by.as_deref().unwrap_or("nothing"),
        moved_to = %moved.display(),
        "rows salvaged from the damaged journal; orders not salvaged are only in the moved file"
    );
    match open_connection(&path, node_id) {
        Ok(conn) => finish_writable(conn, path, lock, order_history, salvage),
        Err(failure) => failure.into_opening(),
    }
}

/// Reads a journal through a connection that never writes it.
fn open_read_only(path: &Path, node_id: &str, why: String) -> JournalOpening {
    if !path.exists() {
        return JournalOpening::Unavailable {
            reason: format!("{why}; no journal exists at {}", path.display()),
            earlier_orders: EarlierOrders::Visible,
        };
    }
    let unreadable = |failure: OpenFailure| {
        let reason = match failure {
            OpenFailure::Damaged(reason) => format!(
                "{} failed its integrity check ({reason}) and cannot be moved aside ({why})",
                path.display()
            ),
            OpenFailure::NotWritable(reason) | OpenFailure::Unreadable(reason) => {
                format!("{why}; and {} cannot be read: {reason}", path.display())
            }
        };
        JournalOpening::Unavailable {
            reason,
            earlier_orders: EarlierOrders::Unseen,
        }
    };
    let conn = match connect_read_only(path) {
        Ok(conn) => conn,
        Err(err) => return unreadable(OpenFailure::from_sqlite(err)),
    };
    if let Err(failure) = check_integrity(&conn) {
        return unreadable(failure);
    }
    match stored_node_id(&conn) {
        Ok(Some(stored)) if stored != node_id => {
            return unreadable(foreign(path, &stored, node_id));
        }
        Ok(_) => {}
        Err(failure) => return unreadable(failure),
    }
    match load(&conn) {
        Ok(recovered) => JournalOpening::ReadOnly {
            path: path.to_path_buf(),
            recovered,
            reason: format!("{why}: the journal is read-only, new orders cannot be written"),
        },
        Err(err) => unreadable(OpenFailure::from_sqlite(err)),
    }
}

/// A connection that reads `path` and writes nothing. With a `-wal` file
/// beside it (a run that did not end cleanly) SQLite reads it too;
/// without one, the file is opened as immutable, which needs no `-shm`
/// file, so a read-only directory is no obstacle.
fn connect_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if sibling(path, "-wal").exists() {
        Connection::open_with_flags(path, flags)
    } else {
        Connection::open_with_flags(format!("{}?immutable=1", file_uri(path)), flags)
    }
}

/// `path` as an SQLite `file:` URI, every byte outside the unreserved set
/// percent-encoded.
fn file_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            let _ = write!(uri, "%{byte:02X}");
        }
    }
    uri
}

/// `path` with `suffix` appended to its file name (`-wal`, `-shm`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Renames the journal and its `-wal` and `-shm` files to
/// `<name>.corrupt-<UTC timestamp>` (and `-wal`, `-shm` after that, so
/// `sqlite3` opens them together). Never replaces an existing file; on a
/// failure, what was moved is moved back.
fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let stamp = utc_timestamp(SystemTime::now());
    let target = (1..)
        .map(|attempt| {
            let suffix = match attempt {
                1 => format!(".corrupt-{stamp}"),
                n => format!(".corrupt-{stamp}-{n}"),
            };
            sibling(path, &suffix)
        })
        .find(|candidate| {
            ["", "-wal", "-shm"]
                .iter()
                .all(|suffix| !sibling(candidate, suffix).exists())
        })
        .expect("some suffix is free");
    // The write-ahead log first: a fresh journal must never find the old
    // one's log beside it.
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
    for suffix in ["-wal", "-shm", ""] {
        let from = sibling(path, suffix);
        if !suffix.is_empty() && !from.exists() {
            continue;
        }
        let to = sibling(&target, suffix);
        if let Err(err) = fs::rename(&from, &to) {
            for (from, to) in moved.iter().rev() {
                let _ = fs::rename(to, from);
            }
            return Err(err);
        }
        moved.push((from, to));
    }
    Ok(target)
}

/// `YYYYMMDDTHHMMSSZ` for `time`, in UTC.
fn utc_timestamp(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// What could be read from a damaged journal.
#[derive(Debug, Default)]
struct Salvage {
    /// Rows that were read and passed validation.
    orders: Vec<StoredWrite>,
    /// Counts of compacted orders, when they could be read.
    compacted: SettledCounts,
    /// Rows that were read but failed validation.
    skipped: u64,
    /// Why reading stopped short, if it did.
    stopped_by: Option<String>,
}

impl Salvage {
    fn pending(&self) -> usize {
        self.orders
            .iter()
            .filter(|order| order.status == WriteStatus::Queued)
            .count()
    }
}

/// Reads every row of the damaged journal at `moved` that can still be
/// read and validated. A damaged page stops a scan; the scan resumes at the
/// first request id past it that can be reached, so one bad page loses the
/// rows on that page, not all the rows after it.
fn salvage(moved: &Path, node_id: &str) -> Salvage {
    let mut salvage = Salvage::default();
    // `writable_schema` lets SQLite read a file shorter than its header
    // says (a truncated journal) instead of refusing it whole; the
    // connection is read-only all the same.
    let conn = match connect_read_only(moved).and_then(|conn| {
        conn.pragma_update(None, "writable_schema", true)
            .map(|()| conn)
    }) {
        Ok(conn) => conn,
        Err(err) => {
            salvage.stopped_by = Some(err.to_string());
            return salvage;
        }
    };
    match stored_node_id(&conn) {
        Ok(Some(stored)) if stored != node_id => {
            salvage.stopped_by = Some(format!("it belongs to node id {stored:?}"));
            return salvage;
        }
        _ => {}
    }
    salvage.compacted = compacted_counts(&conn).unwrap_or_default();
    let mut from = i64::MIN;
    loop {
        match scan_from(&conn, from, &mut salvage) {
            Ok(()) => break,
            Err(err) => {
                let last = salvage.orders.last().map_or(from, |o| o.request_id as i64);
                salvage.stopped_by.get_or_insert_with(|| err.to_string());
                match next_readable_request_id(&conn, last.max(from)) {
                    Some(next) => from = next,
                    None => break,
                }
            }
        }
    }
    salvage
}

/// Reads rows with request id `from` and up into `salvage`, until the end
/// or the first error.
fn scan_from(conn: &Connection, from: i64, salvage: &mut Salvage) -> rusqlite::Result<()> {
    let mut statement = conn.prepare(&format!(
        "SELECT {} FROM orders WHERE request_id >= ?1 ORDER BY request_id",
        row_columns(conn)?
    ))?;
    let mut rows = statement.query([from])?;
    while let Some(row) = rows.next()? {
        match decode_row(row)? {
            Ok(order) => salvage.orders.push(order),
            Err(_) => salvage.skipped += 1,
        }
    }
    Ok(())
}

/// The smallest id above `failed` from which rows can be read again, found
/// by probing ever further ahead and then narrowing down.
fn next_readable_request_id(conn: &Connection, failed: i64) -> Option<i64> {
    let readable = |from: i64| {
        conn.query_row(
            "SELECT request_id FROM orders WHERE request_id >= ?1 ORDER BY request_id LIMIT 1",
            [from],
            |row| row.get::<_, i64>(0),
        )
        .optional()
        .is_ok()
    };
    let (mut bad, mut step) = (failed, 1i64);
    let good = loop {
        let probe = bad.checked_add(step)?;
        if readable(probe) {
            break probe;
        }
        bad = probe;
        step = step.checked_mul(2)?;
    };
    // Readable from `good`, not from `bad`: the boundary is in between.
    let (mut bad, mut good) = (bad, good);
    while good - bad > 1 {
        let middle = bad + (good - bad) / 2;
        if readable(middle) {
            good = middle;
        } else {
            bad = middle;
        }
    }
    Some(good)
}

fn compacted_counts(conn: &Connection) -> rusqlite::Result<SettledCounts> {
    let meta = |name: &str| -> rusqlite::Result<u64> {
        let value: Option<SqlValue> = conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
                row.get(0)
            })
            .optional()?;
        Ok(match value {
            None => 0,
            Some(SqlValue::Integer(count)) if count >= 0 => count as u64,
            Some(other) => {
                tracing::warn!(
                    name,
                    value = %shown(&other),
                    "journal meta value is not a count; read as 0"
                );
                0
            }
        })
    };
    Ok(SettledCounts {
        processed: meta("compacted_processed")?,
        dead_letters: meta("compacted_dead_letters")?,
    })
}

/// Reads every row of a sound journal. A row that fails validation is
/// reported and skipped, and its request id stays reserved.
fn load(conn: &Connection) -> rusqlite::Result<RecoveredQueue> {
    let has_orders: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'orders')",
        [],
        |row| row.get(0),
    )?;
    if !has_orders {
        // An empty file, read read-only before any run created the tables.
        return Ok(RecoveredQueue::default());
    }
    let compacted = compacted_counts(conn)?;
    let mut statement = conn.prepare(&format!(
        "SELECT {} FROM orders ORDER BY request_id",
        row_columns(conn)?
    ))?;
    let mut rows = statement.query([])?;
    let mut orders = Vec::new();
    let mut highest_request_id: RequestId = 0;
    let mut skipped = 0u64;
    while let Some(row) = rows.next()? {
        if let SqlValue::Integer(id) = row.get::<_, SqlValue>(0)? {
            highest_request_id = highest_request_id.max(id.max(0) as RequestId);
        }
        match decode_row(row)? {
            Ok(order) => orders.push(order),
            Err(problem) => {
                skipped += 1;
                tracing::error!(
                    request_id = %shown(&row.get::<_, SqlValue>(0)?),
                    %problem,
                    "skipping a journal row that fails validation; it is left in the journal \
                     for the operator and its request id is not reused"
                );
            }
        }
    }
    if skipped > 0 {
        tracing::warn!(skipped, "journal rows skipped");
    }
    let mut recovered = RecoveredQueue::from_rows(orders, compacted, 0);
    recovered.highest_request_id = recovered.highest_request_id.max(highest_request_id);
    Ok(recovered)
}

/// One journal row as a write, or why it is not a valid one (the inner
/// `Err`). The outer `Err` is a failure to read the row at all.
fn decode_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredWrite, String>> {
    let mut values: RowValues = std::array::from_fn(|_| SqlValue::Null);
    for (index, value) in values.iter_mut().enumerate() {
        *value = row.get::<_, SqlValue>(index)?;
    }
    Ok(validate_row(values))
}

/// A column's value as an operator would write it in SQL.
fn shown(value: &SqlValue) -> String {
    match value {
        SqlValue::Null => "NULL".into(),
        SqlValue::Integer(integer) => integer.to_string(),
        SqlValue::Real(real) => real.to_string(),
        SqlValue::Text(text) => format!("'{}'", text.replace('\'', "''")),
        SqlValue::Blob(blob) => format!("a blob of {} bytes", blob.len()),
    }
}

/// The values of [`ORDER_COLUMNS`] then [`WRITE_COLUMNS`].
type RowValues = [SqlValue; 13];

fn validate_row(values: RowValues) -> Result<StoredWrite, String> {
    let [
        request_id,
        idempotency_key,
        payload,
        status,
        attempts,
        result_id,
        was_queued,
        service,
        public_id,
        fingerprint,
        response_status,
        response_content_type,
        response_body,
    ] = values;
    let optional_text = |name: &str, value: SqlValue| match value {
        SqlValue::Null => Ok(None),
        SqlValue::Text(text) => Ok(Some(text)),
        other => Err(format!(
            "{name} must be text or null, not {}",
            shown(&other)
        )),
    };
    let request_id = match request_id {
        SqlValue::Integer(id) if id >= 1 => id as RequestId,
        other => {
            return Err(format!(
                "request_id must be a positive integer, not {}",
                shown(&other)
            ));
        }
    };
    let status = match &status {
        SqlValue::Text(text) => WriteStatus::from_journal(text),
        _ => None,
    }
    .ok_or_else(|| format!("unknown status {}", shown(&status)))?;
    let attempts = match attempts {
        SqlValue::Integer(count) => {
            u32::try_from(count).map_err(|_| format!("attempts out of range: {count}"))?
        }
        other => {
            return Err(format!(
                "attempts must be an integer, not {}",
                shown(&other)
            ));
        }
    };
    let was_queued = match was_queued {
        SqlValue::Integer(0) => false,
        SqlValue::Integer(1) => true,
        other => return Err(format!("was_queued must be 0 or 1, not {}", shown(&other))),
    };
    let idempotency_key = optional_text("idempotency_key", idempotency_key)?;
    let result_id = optional_text("order_id", result_id)?;
    let payload = match optional_text("order_json", payload)? {
        None => None,
        Some(json) => {
            let payload = RawValue::from_string(json)
                .map_err(|err| format!("order_json is not JSON: {err}"))?;
            if !payload.get().trim_start().starts_with('{') {
                return Err("order_json is not a JSON object".into());
            }
            Some(Arc::from(payload))
        }
    };
    let service = optional_text("service", service)?.unwrap_or_else(|| SERVICE_OF_OLD_ROWS.into());
    let public_id = optional_text("public_id", public_id)?;
    let fingerprint = optional_text("fingerprint", fingerprint)?;
    let response = match response_status {
        SqlValue::Null => None,
        SqlValue::Integer(code) if (100..=599).contains(&code) => Some(StoredResponse {
            status: code as u16,
            content_type: optional_text("response_content_type", response_content_type)?,
            body: match response_body {
                SqlValue::Null => Vec::new(),
                SqlValue::Blob(body) => body,
                SqlValue::Text(text) => text.into_bytes(),
                other => {
                    return Err(format!(
                        "response_body must be bytes, not {}",
                        shown(&other)
                    ));
                }
            },
        }),
        other => {
            return Err(format!(
                "response_status must be an HTTP status, not {}",
                shown(&other)
            ));
        }
    };
    match status {
        WriteStatus::Delivered if result_id.is_none() && response.is_none() => {
            return Err("a created write has neither an order_id nor a response".into());
        }
        WriteStatus::Queued | WriteStatus::DeadLetter if payload.is_none() => {
            return Err(format!("a {} write has no order_json", status.as_str()));
        }
        _ => {}
    }
    Ok(StoredWrite {
        request_id,
        service,
        idempotency_key,
        public_id,
        fingerprint,
        payload,
        status,
        attempts,
        result_id,
        response,
        was_queued,
    })
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

/// The file name of `node_id`'s journal, before the suffix: one-to-one.
///
/// ASCII letters, digits, `-` and `_` are kept; every other byte of the
/// UTF-8 id (`%` and `.` included) becomes `%XX`, so two ids never share a
/// name (`n.1` is `n%2E1`, `n_1` stays `n_1`). An id longer than
/// [`MAX_STEM_BYTES`] once escaped keeps a prefix and adds `~` and a 64-bit
/// FNV-1a hash of the whole id; the journal records the full id and a
/// journal of another id is refused, so even a hash collision cannot make
/// two ids share one.
fn file_stem(node_id: &str) -> String {
    let mut stem = String::with_capacity(node_id.len());
    for byte in node_id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            stem.push(char::from(byte));
        } else {
            let _ = write!(stem, "%{byte:02X}");
        }
    }
    if stem.is_empty() {
        return EMPTY_NODE_ID_STEM.into();
    }
    if stem.len() <= MAX_STEM_BYTES {
        return stem;
    }
    // Cut before an escape rather than through one.
    let mut cut = LONG_STEM_PREFIX_BYTES;
    if let Some(escape) = stem[cut - 2..cut].find('%') {
        cut = cut - 2 + escape;
    }
    format!(
        "{}{LONG_STEM_SEPARATOR}{:016x}",
        &stem[..cut],
        fnv1a(node_id.as_bytes())
    )
}

/// 64-bit FNV-1a: stable across releases and platforms, as a file name
/// must be.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The journal file for `node_id` under `data_dir`.
pub fn journal_path(data_dir: &Path, node_id: &str) -> PathBuf {
    data_dir.join(format!("{}{JOURNAL_SUFFIX}", file_stem(node_id)))
}

/// The name the journal of `node_id` had before names were one-to-one:
/// every character but ASCII letters, digits, `-` and `_` became `_`.
fn old_journal_path(data_dir: &Path, node_id: &str) -> PathBuf {
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
    let stem = if stem.is_empty() { "node".into() } else { stem };
    data_dir.join(format!("{stem}{JOURNAL_SUFFIX}"))
}

/// Says so on stderr when a journal under the old name of `node_id`
/// exists: it may hold this node's orders (or, since old names collided,
/// another node's), and only the operator can tell.
fn report_old_name(data_dir: &Path, node_id: &str, path: &Path) {
    let old = old_journal_path(data_dir, node_id);
    if old != path && old.exists() {
        tracing::warn!(
            old_journal = %old.display(),
            journal = %path.display(),
            "a journal under the old naming scheme exists for this node id and is not opened: \
             old names could be shared by several node ids. If it holds this node's orders, \
             stop grace and rename it (with its -wal file) to the journal's name"
        );
    }
}

impl SqliteJournal {
    /// Opens (creating if needed) and locks the journal of `node_id`, and
    /// reads back everything committed so far. Anything short of a
    /// writable journal is an error here; [`open_journal`] says more.
    pub fn open(
        data_dir: &Path,
        node_id: &str,
        order_history: usize,
    ) -> Result<(Self, RecoveredQueue), JournalError> {
        match open_journal(data_dir, node_id, order_history) {
            JournalOpening::Writable { journal, recovered } => Ok((journal, recovered)),
            JournalOpening::ReadOnly { reason, .. }
            | JournalOpening::Unavailable { reason, .. } => Err(JournalError(reason)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what was salvaged from a damaged journal, in one transaction.
    fn import(&mut self, salvage: &Salvage) -> Result<(), JournalError> {
        if salvage.orders.is_empty() && salvage.compacted == SettledCounts::default() {
            return Ok(());
        }
        self.commit(&salvage.orders)?;
        let transaction = self.conn.transaction()?;
        add_compacted(
            &transaction,
            "compacted_processed",
            salvage.compacted.processed,
        )?;
        add_compacted(
            &transaction,
            "compacted_dead_letters",
            salvage.compacted.dead_letters,
        )?;
        transaction.commit()?;
        Ok(())
    }

    /// Writes `rows` in one transaction: one fsync however many rows.
    pub fn commit(&mut self, rows: &[StoredWrite]) -> Result<(), JournalError> {
        if rows.is_empty() {
            return Ok(());
        }
        let transaction = self.conn.transaction()?;
        {
            let mut upsert = transaction.prepare_cached(
                "INSERT OR REPLACE INTO orders
                 (request_id, idempotency_key, order_json, status, attempts, order_id, was_queued,
                  service, public_id, fingerprint,
                  response_status, response_content_type, response_body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            for row in rows {
                let response = row.response.as_ref();
                upsert.execute(params![
                    row.request_id as i64,
                    row.idempotency_key,
                    row.payload.as_ref().map(|payload| payload.get()),
                    row.status.as_str(),
                    row.attempts,
                    row.result_id,
                    row.was_queued,
                    row.service,
                    row.public_id,
                    row.fingerprint,
                    response.map(|response| response.status),
                    response.and_then(|response| response.content_type.as_deref()),
                    response.map(|response| response.body.as_slice()),
                ])?;
            }
        }
        self.settled_since_compaction += rows
            .iter()
            .filter(|row| row.status != WriteStatus::Queued)
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

fn add_compacted(
    transaction: &rusqlite::Transaction<'_>,
    name: &str,
    count: u64,
) -> Result<(), rusqlite::Error> {
    transaction.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + ?2",
        params![name, count as i64],
    )?;
    Ok(())
}

/// Deletes all but the newest `keep` settled (created or dead-lettered)
/// orders, adding them to the kept counts. Queued rows are never deleted,
/// nor rows of no known status (left for the operator).
/// Dead letters outlive `keep` newer settled orders before they go, and
/// their going is logged: never silent.
fn compact(transaction: &rusqlite::Transaction<'_>, keep: usize) -> Result<(), JournalError> {
    let cutoff: Option<i64> = transaction
        .query_row(
            "SELECT request_id FROM orders WHERE status IN ('created', 'dead_letter')
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
    add_compacted(transaction, "compacted_processed", processed as u64)?;
    add_compacted(transaction, "compacted_dead_letters", dead_letters as u64)?;
    transaction.execute(
        "DELETE FROM orders WHERE status IN ('created', 'dead_letter') AND request_id <= ?1",
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

    fn row(request_id: u64, status: WriteStatus) -> StoredWrite {
        StoredWrite {
            request_id,
            service: "order".into(),
            idempotency_key: Some(format!("client:{request_id}")),
            public_id: None,
            fingerprint: None,
            payload: (status != WriteStatus::Delivered)
                .then(|| Arc::from(RawValue::from_string("{\"sku\":1}".into()).unwrap())),
            status,
            attempts: 0,
            result_id: (status == WriteStatus::Delivered).then(|| format!("ord-{request_id}")),
            response: None,
            was_queued: true,
        }
    }

    /// A journal of `node_id` in `dir` holding `rows`, closed again.
    fn journal_holding(dir: &Path, node_id: &str, rows: &[StoredWrite]) -> PathBuf {
        let (mut journal, _) = SqliteJournal::open(dir, node_id, 100).unwrap();
        journal.commit(rows).unwrap();
        journal.path().to_path_buf()
    }

    fn queued_rows(count: u64) -> Vec<StoredWrite> {
        (1..=count).map(|id| row(id, WriteStatus::Queued)).collect()
    }

    fn request_ids(recovered: &RecoveredQueue) -> Vec<u64> {
        recovered.writes.iter().map(|o| o.request_id).collect()
    }

    /// The journals moved aside (without their `-wal` and `-shm` files).
    fn corrupt_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                let name = path.to_string_lossy();
                name.contains(".corrupt-") && !name.ends_with("-wal") && !name.ends_with("-shm")
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn committed_rows_are_recovered_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut journal, recovered) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
            assert!(recovered.writes.is_empty());
            journal
                .commit(&[row(1, WriteStatus::Queued), row(2, WriteStatus::Queued)])
                .unwrap();
            journal.commit(&[row(1, WriteStatus::Delivered)]).unwrap();
        }
        let (_journal, recovered) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        assert_eq!(
            recovered.writes,
            vec![row(1, WriteStatus::Delivered), row(2, WriteStatus::Queued)]
        );
        assert_eq!(recovered.processed, 1);
        assert_eq!(recovered.highest_request_id, 2);
    }

    #[test]
    fn second_owner_of_the_same_node_id_is_refused_and_told_its_orders_are_unseen() {
        let dir = tempfile::tempdir().unwrap();
        let (_first, _) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        match open_journal(dir.path(), "n1", 100) {
            JournalOpening::Unavailable {
                reason,
                earlier_orders,
            } => {
                assert!(reason.contains("locked"), "{reason}");
                assert_eq!(earlier_orders, EarlierOrders::Unseen);
            }
            _ => panic!("a locked journal must not be opened twice"),
        }
        assert!(SqliteJournal::open(dir.path(), "n2", 100).is_ok());
    }

    #[test]
    fn compaction_keeps_pending_and_the_newest_settled_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = SqliteJournal::open(dir.path(), "n1", 2).unwrap();
        use WriteStatus::{DeadLetter, Delivered as Created, Queued};
        let statuses = [
            Created, DeadLetter, Created, Created, Created, Queued, DeadLetter, Queued,
        ];
        let rows: Vec<StoredWrite> = (1..)
            .zip(statuses)
            .map(|(id, status)| row(id, status))
            .collect();
        journal.commit(&rows).unwrap();
        journal.compact_now().unwrap();
        drop(journal);
        let (_journal, recovered) = SqliteJournal::open(dir.path(), "n1", 2).unwrap();
        // Queued 6 and 8 stay; of the settled, the newest two (5, 7).
        assert_eq!(request_ids(&recovered), vec![5, 6, 7, 8]);
        assert_eq!(recovered.processed, 4, "1, 3, 4 and 5 were delivered");
        assert_eq!(recovered.dead_letters, 2, "2 was compacted, 7 is held");
    }

    // -- Names --------------------------------------------------------------

    #[test]
    fn node_ids_become_safe_file_names() {
        let path = journal_path(Path::new("/d"), "../n 1");
        assert_eq!(path, Path::new("/d/%2E%2E%2Fn%201.journal.sqlite"));
        assert_eq!(
            journal_path(Path::new("/d"), "n1-a_b"),
            Path::new("/d/n1-a_b.journal.sqlite"),
            "plain ids keep the name they always had"
        );
    }

    #[test]
    fn distinct_node_ids_get_distinct_file_names_of_bounded_length() {
        let long = "n".repeat(300);
        let ids: Vec<String> = [
            "n.1", "n_1", "n%2E1", "n%1", "é", "ü", "e\u{301}", "", "%", "node", "a/b", "a%2Fb",
            "A", "a", "~", "%7E",
        ]
        .iter()
        .map(|id| id.to_string())
        .chain([
            long.clone(),
            format!("{long}x"),
            format!("{long}y"),
            format!("x{long}"),
            "é".repeat(200),
            "é".repeat(201),
            "%".repeat(100),
        ])
        .collect();
        let mut seen = std::collections::HashMap::new();
        for id in &ids {
            let stem = file_stem(id);
            assert!(
                stem.len() <= MAX_STEM_BYTES,
                "{id:?} -> {} bytes",
                stem.len()
            );
            assert!(!stem.contains('/') && !stem.contains('.'), "{stem}");
            if let Some(other) = seen.insert(stem.clone(), id) {
                panic!("{other:?} and {id:?} share {stem}");
            }
        }
    }

    #[test]
    fn a_journal_records_its_node_id_and_refuses_any_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_holding(dir.path(), "a", &queued_rows(1));
        // A journal copied (or, with a hash collision, named) as another's.
        fs::copy(&path, journal_path(dir.path(), "b")).unwrap();
        match open_journal(dir.path(), "b", 100) {
            JournalOpening::Unavailable {
                reason,
                earlier_orders,
            } => {
                assert!(reason.contains("belongs to node id \"a\""), "{reason}");
                assert_eq!(earlier_orders, EarlierOrders::Unseen);
            }
            _ => panic!("node b must not use node a's journal"),
        }
        let (_journal, recovered) = SqliteJournal::open(dir.path(), "a", 100).unwrap();
        assert_eq!(request_ids(&recovered), vec![1]);
    }

    #[test]
    fn a_journal_without_a_recorded_node_id_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_holding(dir.path(), "n1", &queued_rows(2));
        Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE node")
            .unwrap();
        let (_journal, recovered) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        assert_eq!(request_ids(&recovered), vec![1, 2]);
        let conn = connect_read_only(&path).unwrap();
        assert_eq!(stored_node_id(&conn).ok().flatten().as_deref(), Some("n1"));
    }

    // -- Damage -------------------------------------------------------------

    #[test]
    fn garbage_is_moved_aside_untouched_and_a_fresh_journal_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(dir.path(), "n1");
        let garbage = b"not a journal at all\n".repeat(500);
        fs::write(&path, &garbage).unwrap();
        let (mut journal, recovered) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        assert!(recovered.writes.is_empty());
        journal.commit(&queued_rows(1)).unwrap();
        let aside = corrupt_files(dir.path());
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(fs::read(&aside[0]).unwrap(), garbage);
        let name = aside[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("n1.journal.sqlite.corrupt-"), "{name}");
        assert!(name.ends_with('Z'), "{name}");
    }

    #[test]
    fn a_damaged_page_loses_only_its_own_rows() {
        const PAGE: usize = 4096;
        let dir = tempfile::tempdir().unwrap();
        let rows = queued_rows(3000);
        let path = journal_holding(dir.path(), "n1", &rows);
        let mut bytes = fs::read(&path).unwrap();
        let pages = bytes.len() / PAGE;
        assert!(pages > 20, "{pages} pages");
        // A leaf page in the middle of the orders table.
        let damaged = pages / 2;
        bytes[damaged * PAGE..(damaged + 1) * PAGE].fill(0);
        fs::write(&path, &bytes).unwrap();

        let (_journal, recovered) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        let salvaged = recovered.writes.len();
        assert!(salvaged < 3000, "a zeroed page loses rows: {salvaged}");
        let per_page = 3000 / pages;
        assert!(
            salvaged >= 3000 - 3 * per_page.max(1),
            "only about one page of rows is lost: {salvaged} of 3000 kept"
        );
        for order in &recovered.writes {
            assert_eq!(order, &rows[order.request_id as usize - 1]);
        }
        assert_eq!(corrupt_files(dir.path()).len(), 1);
        drop(_journal);
        // The fresh journal passes its check: nothing more is moved aside.
        let (_journal, again) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        assert_eq!(again.writes.len(), salvaged);
        assert_eq!(corrupt_files(dir.path()).len(), 1);
    }

    #[test]
    fn a_truncated_journal_salvages_the_rows_before_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_holding(dir.path(), "n1", &queued_rows(2000));
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let (_journal, recovered) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        let salvaged = recovered.writes.len();
        assert!(salvaged > 0 && salvaged < 2000, "{salvaged}");
        assert_eq!(corrupt_files(dir.path()).len(), 1);
    }

    #[test]
    fn a_damaged_journal_with_its_wal_moves_aside_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(dir.path(), "n1");
        fs::write(&path, b"garbage".repeat(1000)).unwrap();
        fs::write(sibling(&path, "-wal"), b"old log").unwrap();
        let (_journal, _) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        let aside = corrupt_files(dir.path());
        assert_eq!(aside.len(), 1, "{aside:?}");
        let wal = sibling(&aside[0], "-wal");
        assert_eq!(
            fs::read(&wal).unwrap(),
            b"old log",
            "the log is kept beside it"
        );
        assert!(
            !sibling(&path, "-wal").exists()
                || fs::read(sibling(&path, "-wal")).unwrap() != b"old log",
            "the fresh journal does not find the old log"
        );
    }

    #[test]
    fn rows_that_fail_validation_are_skipped_and_their_ids_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_holding(dir.path(), "n1", &queued_rows(8));
        let conn = Connection::open(&path).unwrap();
        for edit in [
            "UPDATE orders SET status = 'created', order_id = NULL WHERE request_id = 1",
            "UPDATE orders SET status = 'lost' WHERE request_id = 2",
            "UPDATE orders SET attempts = -1 WHERE request_id = 3",
            "UPDATE orders SET order_json = '{not json' WHERE request_id = 4",
            "UPDATE orders SET order_json = '[1]' WHERE request_id = 5",
            "UPDATE orders SET was_queued = 7 WHERE request_id = 6",
            "UPDATE orders SET order_json = NULL WHERE request_id = 8",
            "INSERT INTO orders (request_id, idempotency_key, order_json, status, attempts, order_id, was_queued) VALUES (-3, 'k', '{}', 'queued', 0, NULL, 1)",
        ] {
            conn.execute_batch(edit).unwrap();
        }
        drop(conn);
        let (_journal, recovered) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        assert_eq!(request_ids(&recovered), vec![7]);
        assert_eq!(recovered.highest_request_id, 8, "8 stays reserved");
        let mut queue = super::super::WriteQueue::new(Default::default(), 0, ["order"]);
        queue.recover(recovered, std::time::Instant::now());
        assert_eq!(queue.allocate_request_id(), 9);
    }

    // -- Older journals -----------------------------------------------------

    #[test]
    fn a_journal_from_before_the_gateway_opens_and_its_rows_are_order_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(dir.path(), "n1");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE orders (request_id INTEGER PRIMARY KEY, idempotency_key TEXT,
                     order_json TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL,
                     order_id TEXT, was_queued INTEGER NOT NULL);
                 CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT INTO orders VALUES (1, 'msg:c1:1', '{\"sku\":1}', 'queued', 0, NULL, 1);
                 INSERT INTO orders VALUES (2, 'msg:c1:2', NULL, 'created', 1, 'ord-2', 0);",
            )
            .unwrap();
        }
        let (mut journal, recovered) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        let services: Vec<&str> = recovered
            .writes
            .iter()
            .map(|w| w.service.as_str())
            .collect();
        assert_eq!(services, ["order", "order"]);
        assert_eq!(recovered.writes[1].result_id.as_deref(), Some("ord-2"));
        // The new columns were added, and take new rows.
        let mut gateway_row = row(3, WriteStatus::Delivered);
        gateway_row.service = "payments".into();
        gateway_row.response = Some(StoredResponse {
            status: 201,
            content_type: Some("application/json".into()),
            body: b"{}".to_vec(),
        });
        journal.commit(&[gateway_row.clone()]).unwrap();
        drop(journal);
        let (_journal, recovered) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        assert_eq!(recovered.writes[2], gateway_row);
    }

    // -- Read-only ----------------------------------------------------------

    #[test]
    fn a_journal_that_cannot_be_written_is_read_without_writing_it() {
        let dir = tempfile::tempdir().unwrap();
        let rows = queued_rows(3);
        let path = journal_holding(dir.path(), "n1", &rows);
        assert!(!sibling(&path, "-wal").exists(), "closed cleanly");
        let before = fs::read(&path).unwrap();
        match open_read_only(&path, "n1", "data dir is read-only".into()) {
            JournalOpening::ReadOnly {
                recovered, reason, ..
            } => {
                assert_eq!(recovered.writes, rows);
                assert!(reason.contains("data dir is read-only"), "{reason}");
            }
            _ => panic!("a sound journal is read"),
        }
        assert_eq!(fs::read(&path).unwrap(), before);
        assert!(
            !sibling(&path, "-shm").exists(),
            "nothing created beside it"
        );
    }

    #[test]
    fn a_read_only_journal_includes_what_its_write_ahead_log_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = SqliteJournal::open(dir.path(), "n1", 100).unwrap();
        // Still open: the rows are in the -wal file, not yet in the main one.
        journal.commit(&queued_rows(2)).unwrap();
        let path = journal.path().to_path_buf();
        assert!(sibling(&path, "-wal").exists());
        match open_read_only(&path, "n1", "read-only".into()) {
            JournalOpening::ReadOnly { recovered, .. } => {
                assert_eq!(request_ids(&recovered), vec![1, 2]);
            }
            _ => panic!("the journal is read"),
        }
    }

    #[test]
    fn a_missing_journal_in_a_read_only_dir_hides_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(dir.path(), "n1");
        match open_read_only(&path, "n1", "read-only".into()) {
            JournalOpening::Unavailable { earlier_orders, .. } => {
                assert_eq!(earlier_orders, EarlierOrders::Visible);
            }
            _ => panic!("there is no journal to read"),
        }
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |seconds: u64| utc_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(seconds));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_700_000_000), "20231114T221320Z");
        assert_eq!(at(4_102_444_799), "20991231T235959Z");
        assert_eq!(
            at(4_107_542_399),
            "21000228T235959Z",
            "2100 is not a leap year"
        );
    }
}
