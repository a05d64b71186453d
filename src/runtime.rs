//! The thin I/O edge: stdin to the node, the node's replies to stdout, the
//! clock, signals and the journal.
//!
//! One thread reads stdin in large chunks, another turns SIGTERM/SIGINT into
//! an event; both feed one channel. The main thread frames the bytes, hands
//! each message to the [`Node`] with the current instant, wakes at
//! [`Node::poll_timeout`] when no input comes, and after each burst commits
//! the journal rows the burst produced (one transaction: group commit)
//! *before* writing its replies, so a "queued" reply always describes a
//! request already on disk. Replies are written whenever no further input is
//! waiting, so a single request is answered at once and a flood of them is
//! written in large blocks.

use crate::backend::Backend;
use crate::config::Config;
use crate::node::Node;
use crate::protocol::reply::UNNAMED_NODE_ID;
use crate::protocol::{self, Rejected, framing::Frame, framing::Framer};
use crate::queue::RecoveredQueue;
use crate::queue::journal::{
    self, EarlierOrders, JournalInfo, JournalOpening, SqliteJournal, UnjournaledOrders,
};
use std::fs::File;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Bytes read from stdin at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks that may wait in the channel; bounds memory when stdout is slow.
const CHANNEL_CHUNKS: usize = 64;
/// Replies buffered before they are written even though input keeps coming.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

enum Event {
    Input(Vec<u8>),
    EndOfInput,
    Signal(i32),
}

/// Runs the node until the end of input or a signal.
pub fn run(config: Config) -> ExitCode {
    let backend = match &config.fixtures {
        Some(path) => match Backend::from_fixtures_file(path) {
            Ok(backend) => backend,
            Err(err) => {
                eprintln!("grace: {err}");
                return ExitCode::from(2);
            }
        },
        None => Backend::demo(),
    };
    let stdout = match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(err) => {
            eprintln!("grace: cannot use stdout: {err}");
            return ExitCode::from(2);
        }
    };
    let events = spawn_event_sources();
    let mut runtime = Runtime {
        seed: config.seed.unwrap_or_else(clock_seed),
        framer: Framer::new(config.max_message_bytes),
        config,
        backend: Some(backend),
        node: None,
        journal: None,
        stdout,
        unwritten: Vec::new(),
        journal_failure: None,
    };
    if let Some(node_id) = runtime.config.node_id.clone() {
        runtime.start_node(&node_id, Instant::now());
    }
    match runtime.run(events) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop::StdoutClosed) => {
            tracing::debug!("stdout was closed by the reader; exiting");
            ExitCode::SUCCESS
        }
        Err(Stop::JournalFailed(err)) => {
            tracing::error!("journal commit failed, replies of the burst withheld: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The journal's node id implied by the first request, or why `message` is
/// not one: `init`'s node_id, else the request's `dest`, else
/// [`UNNAMED_NODE_ID`]. A request is a message that parses and can be
/// answered, malformed body or not.
fn journal_node_id(message: &[u8]) -> Result<String, String> {
    if let Err(Rejected::Unaddressable(reason)) = protocol::parse_request(message) {
        return Err(reason);
    }
    Ok(protocol::node_id_hint(message).unwrap_or_else(|| UNNAMED_NODE_ID.to_owned()))
}

/// A number no other run draws, from the operating system's randomness
/// (std seeds `RandomState` from it), mixed with the clock and the process
/// id: anonymous orders' delivery keys carry it.
fn fresh_run_id() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(clock_seed());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

fn spawn_event_sources() -> Receiver<Event> {
    let (sender, receiver) = mpsc::sync_channel(CHANNEL_CHUNKS);
    let input = sender.clone();
    thread::spawn(move || read_stdin(input));
    match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(mut signals) => {
            thread::spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    let _ = sender.send(Event::Signal(signal));
                }
            });
        }
        Err(err) => tracing::warn!("cannot catch SIGTERM/SIGINT: {err}"),
    }
    receiver
}

fn read_stdin(events: SyncSender<Event>) {
    let mut stdin = io::stdin().lock();
    loop {
        let mut chunk = vec![0; READ_CHUNK_BYTES];
        match stdin.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => {
                chunk.truncate(read);
                if events.send(Event::Input(chunk)).is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::warn!("reading stdin failed, treating it as the end of input: {err}");
                break;
            }
        }
    }
    let _ = events.send(Event::EndOfInput);
}

/// Why the loop stopped early.
enum Stop {
    StdoutClosed,
    JournalFailed(String),
}

struct Runtime {
    config: Config,
    seed: u64,
    framer: Framer,
    /// The services, until the node is built and takes them.
    backend: Option<Backend>,
    node: Option<Node>,
    journal: Option<SqliteJournal>,
    stdout: File,
    /// Replies taken from the node, waiting for the burst to end.
    unwritten: Vec<u8>,
    /// A commit that failed: the node stops, writing no reply it cannot keep.
    journal_failure: Option<String>,
}

impl Runtime {
    fn run(&mut self, events: Receiver<Event>) -> Result<(), Stop> {
        let mut waiting: Option<Event> = None;
        loop {
            let event = match waiting.take() {
                Some(event) => Some(event),
                None => self.next_event(&events),
            };
            match event {
                None => {
                    if let Some(node) = &mut self.node {
                        node.handle_timeout(Instant::now());
                    }
                }
                Some(Event::Input(chunk)) => self.feed(&chunk),
                Some(Event::EndOfInput) => {
                    self.finish_input();
                    break;
                }
                Some(Event::Signal(signal)) => {
                    tracing::info!(signal, "signal received; finishing the input already read");
                    while let Ok(Event::Input(chunk)) = events.try_recv() {
                        self.feed(&chunk);
                    }
                    self.finish_input();
                    break;
                }
            }
            waiting = events.try_recv().ok();
            let output_waiting = self.node.as_ref().map_or(0, Node::output_len);
            if waiting.is_none() || output_waiting + self.unwritten.len() >= WRITE_BATCH_BYTES {
                self.commit_and_write()?;
            }
        }
        if let Some(node) = &mut self.node {
            node.handle_timeout(Instant::now());
        }
        self.commit_and_write()?;
        self.warn_if_orders_only_in_memory();
        Ok(())
    }

    /// Waits for input, or until the node's next deadline.
    fn next_event(&mut self, events: &Receiver<Event>) -> Option<Event> {
        let deadline = self.node.as_ref().and_then(Node::poll_timeout);
        match deadline {
            None => Some(events.recv().unwrap_or(Event::EndOfInput)),
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(Instant::now());
                match events.recv_timeout(wait) {
                    Ok(event) => Some(event),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Event::EndOfInput),
                }
            }
        }
    }

    /// Handles the messages in `chunk`. They arrived together, so they share
    /// one reading of the clock.
    fn feed(&mut self, chunk: &[u8]) {
        let now = Instant::now();
        let mut framer = std::mem::take(&mut self.framer);
        framer.push(chunk, &mut |frame| self.handle_frame(frame, now));
        self.framer = framer;
    }

    fn finish_input(&mut self) {
        let now = Instant::now();
        let mut framer = std::mem::take(&mut self.framer);
        framer.finish(&mut |frame| self.handle_frame(frame, now));
        self.framer = framer;
    }

    fn handle_frame(&mut self, frame: Frame<'_>, now: Instant) {
        match frame {
            Frame::Message { line, bytes } => {
                if self.journal_failure.is_some() {
                    return;
                }
                if self.node.is_none() && !self.start_node_at_first_request(bytes, line, now) {
                    return;
                }
                let node = self.node.as_mut().expect("node started");
                node.handle_message(bytes, line, now);
                if self.config.commit_per_request
                    && let Err(err) = self.commit_journal()
                {
                    self.journal_failure = Some(err);
                }
            }
            Frame::Oversized { line } => tracing::warn!(
                line,
                limit = self.config.max_message_bytes,
                "skipping a message longer than --max-message-bytes"
            ),
            Frame::Unterminated { line } => {
                tracing::warn!(line, "skipping an object whose braces never close")
            }
        }
    }

    /// Starts the node if `message`, which began on input line `line`, is a
    /// request: the first request names the journal (see
    /// [`journal_node_id`]). A line that is not one names nothing: it is
    /// logged and skipped, so whatever garbage comes first, a restart finds
    /// the same journal. Returns whether the node is running.
    fn start_node_at_first_request(&mut self, message: &[u8], line: u64, now: Instant) -> bool {
        match journal_node_id(message) {
            Ok(node_id) => {
                self.start_node(&node_id, now);
                true
            }
            Err(reason) => {
                tracing::warn!(line, "skipping input: {reason}");
                false
            }
        }
    }

    /// Builds the node at `now`, its queue resumed from the journal of
    /// `node_id` (recovered orders are due at once).
    fn start_node(&mut self, node_id: &str, now: Instant) {
        let backend = self.backend.take().expect("node starts once");
        let mut node = Node::new(self.config.node_config(self.seed), backend, now);
        let (info, mut recovered) = self.open_journal(node_id);
        recovered.run_id = fresh_run_id();
        node.recover(info, recovered, now);
        self.node = Some(node);
    }

    /// Opens the journal of `node_id`, keeps it when it can be written, and
    /// says what the node may promise with it.
    fn open_journal(&mut self, node_id: &str) -> (JournalInfo, RecoveredQueue) {
        let unjournaled = if self.config.volatile_queue {
            UnjournaledOrders::KeptInMemory
        } else {
            UnjournaledOrders::Refused
        };
        let opening =
            journal::open_journal(&self.config.data_dir, node_id, self.config.order_history);
        let (info, recovered) = match opening {
            JournalOpening::Writable { journal, recovered } => {
                tracing::info!(journal = %journal.path().display(), "durable queue opened");
                let info = JournalInfo::durable(Some(journal.path().to_path_buf()));
                self.journal = Some(journal);
                return (info, recovered);
            }
            JournalOpening::ReadOnly {
                path,
                recovered,
                reason,
            } => {
                let info = JournalInfo::not_durable(
                    Some(path),
                    reason,
                    EarlierOrders::Visible,
                    unjournaled,
                );
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
                "queue is not durable: {reason}; orders the order service cannot take now are \
                 refused with code 11 (--volatile-queue keeps them in memory instead)"
            ),
            UnjournaledOrders::KeptInMemory => tracing::warn!(
                "queue is not durable: {reason}; --volatile-queue: orders the order service \
                 cannot take now are kept in memory only, lost at exit"
            ),
        }
        if info.earlier_orders == EarlierOrders::Unseen {
            tracing::warn!(
                "orders in the journal cannot be seen: get_order answers code 11, not 20, for \
                 an order it does not know"
            );
        }
        (info, recovered)
    }

    /// Commits the burst's journal rows, then writes its replies.
    fn commit_and_write(&mut self) -> Result<(), Stop> {
        if let Some(err) = self.journal_failure.take() {
            return Err(Stop::JournalFailed(err));
        }
        self.commit_journal().map_err(Stop::JournalFailed)?;
        let Some(node) = &mut self.node else {
            return Ok(());
        };
        node.drain_output_into(&mut self.unwritten);
        if self.unwritten.is_empty() {
            return Ok(());
        }
        let written = self.stdout.write_all(&self.unwritten);
        self.unwritten.clear();
        match written {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Err(Stop::StdoutClosed),
            Err(err) => {
                tracing::warn!("writing stdout failed: {err}");
                Err(Stop::StdoutClosed)
            }
        }
    }

    /// Commits the journal rows the node produced since the last commit.
    fn commit_journal(&mut self) -> Result<(), String> {
        let Some(node) = &mut self.node else {
            return Ok(());
        };
        let rows = node.take_journal_writes();
        match &mut self.journal {
            Some(journal) => journal.commit(&rows).map_err(|err| err.0),
            None => Ok(()),
        }
    }

    fn warn_if_orders_only_in_memory(&self) {
        let Some(node) = &self.node else { return };
        let pending = node.queue().pending_accepted_this_run();
        if !node.journal_info().durable && pending > 0 {
            tracing::warn!(
                pending,
                "exiting with queued orders held only in memory: they are lost"
            );
        }
    }
}
