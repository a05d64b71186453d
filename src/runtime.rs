//! The thin I/O edge: stdin to the node, the node's replies to stdout, the
//! clock, signals and the journal.
//!
//! One thread does it all. It waits in `poll(2)` on stdin and on a pipe that
//! the SIGTERM/SIGINT handler writes to, with the node's next deadline
//! ([`Node::poll_timeout`]) as the timeout. Each read of stdin is framed and
//! handed to the [`Node`] with one reading of the clock. Whenever no further
//! input is waiting, the journal rows the burst produced are committed (one
//! transaction: group commit) *before* its replies are written, so a
//! "queued" reply always describes a request already on disk. A single
//! request is thus answered at once, and a flood is written in large blocks.
//!
//! A signal stops the reading: what was already read is answered, the
//! journal committed, the replies written, and the process exits 0. Nothing
//! more is read after it, so a writer that never stops cannot keep the node
//! alive or make it buffer without bound.

use crate::config::Config;
use crate::core::queue::RecoveredQueue;
use crate::core::queue::journal::{self, JournalInfo, SqliteJournal, UnjournaledOrders};
use crate::demo::DemoData;
use crate::maelstrom::node::InProcessNode;
use crate::protocol::framing::{Frame, FrameSink, Framer, Offer};
use crate::protocol::reply::UNNAMED_NODE_ID;
use crate::protocol::{self, Rejected};
use rustix::event::{PollFd, PollFlags, Timespec};
use std::fs::File;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes read from stdin at a time (a pipe holds 64 KiB; a file gives more).
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Replies buffered before they are written even though input keeps coming.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Runs the node until the end of input or a signal.
pub fn run(config: Config) -> ExitCode {
    let data = match &config.fixtures {
        Some(path) => match DemoData::from_fixtures_file(path) {
            Ok(data) => data,
            Err(err) => {
                eprintln!("grace: {err}");
                return ExitCode::from(2);
            }
        },
        None => DemoData::builtin(),
    };
    let (stdin, stdout) = match (
        duplicate(io::stdin().as_fd()),
        duplicate(io::stdout().as_fd()),
    ) {
        (Ok(stdin), Ok(stdout)) => (stdin, stdout),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("grace: cannot use stdin/stdout: {err}");
            return ExitCode::from(2);
        }
    };
    let signals = match SignalPipe::register() {
        Ok(signals) => Some(signals),
        Err(err) => {
            tracing::warn!("cannot catch SIGTERM/SIGINT: {err}");
            None
        }
    };
    let mut runtime = Runtime {
        seed: config.policies.seed.unwrap_or_else(clock_seed),
        framer: Framer::new(config.max_message_bytes),
        config,
        data: Some(data),
        node: None,
        journal: None,
        stdout,
        journal_failure: None,
    };
    if let Some(node_id) = runtime.config.node_id.clone() {
        runtime.start_node(&node_id, Instant::now());
    }
    let mut input = Input { stdin, signals };
    match runtime.run(&mut input) {
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

/// An owned copy of a standard stream's descriptor, read and written
/// without std's locks and buffers (the runtime does its own batching).
fn duplicate(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<File> {
    fd.try_clone_to_owned().map(File::from)
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

/// SIGTERM and SIGINT, turned into a readable byte on a pipe so that the
/// loop can wait for input and signals in one `poll`.
struct SignalPipe {
    receiver: UnixStream,
}

impl SignalPipe {
    fn register() -> io::Result<Self> {
        let (receiver, sender) = UnixStream::pair()?;
        receiver.set_nonblocking(true)?;
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::low_level::pipe::register(signal, sender.try_clone()?)?;
        }
        Ok(SignalPipe { receiver })
    }
}

/// What woke the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// SIGTERM or SIGINT arrived.
    Signal,
    /// stdin has bytes, or its end (or an error) to report.
    Input,
    /// Nothing arrived before the deadline.
    Timeout,
}

/// The loop's two sources: stdin and the signal pipe.
struct Input {
    stdin: File,
    signals: Option<SignalPipe>,
}

impl Input {
    /// Waits up to `timeout` (`None`: for ever) for a signal or input; a
    /// signal wins when both are there.
    fn wait(&mut self, timeout: Option<Duration>) -> Wake {
        let readable = PollFlags::IN;
        let mut fds = vec![PollFd::new(&self.stdin, readable)];
        if let Some(signals) = &self.signals {
            fds.push(PollFd::new(&signals.receiver, readable));
        }
        // A deadline too far to express is as good as none.
        let timeout = timeout.and_then(|wait| Timespec::try_from(wait).ok());
        loop {
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(err) => {
                    // Not expected with valid descriptors; let the read
                    // report whatever is wrong with stdin.
                    tracing::warn!("poll failed: {err}");
                    return Wake::Input;
                }
            }
        }
        if fds.get(1).is_some_and(|fd| !fd.revents().is_empty()) {
            return Wake::Signal;
        }
        // Readable, at its end (HUP), or broken (ERR, NVAL): the read tells.
        if !fds[0].revents().is_empty() {
            return Wake::Input;
        }
        Wake::Timeout
    }
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
    /// The demo data, until the node is built and takes it.
    data: Option<DemoData>,
    node: Option<InProcessNode>,
    journal: Option<SqliteJournal>,
    stdout: File,
    /// A commit that failed: the node stops, writing no reply it cannot keep.
    journal_failure: Option<String>,
}

impl Runtime {
    fn run(&mut self, input: &mut Input) -> Result<(), Stop> {
        let mut buffer = vec![0; READ_CHUNK_BYTES];
        loop {
            let mut wake = input.wait(Some(Duration::ZERO));
            if wake == Wake::Timeout {
                // Nothing more is waiting: answer what was read, then sleep
                // until input, a signal, or the node's next deadline.
                self.commit_and_write()?;
                let deadline = self.node.as_ref().and_then(InProcessNode::poll_timeout);
                let timeout = deadline.map(|at| at.saturating_duration_since(Instant::now()));
                wake = input.wait(timeout);
            }
            match wake {
                Wake::Signal => {
                    tracing::info!("signal received; answering the input already read");
                    self.finish_input();
                    break;
                }
                Wake::Timeout => {
                    if let Some(node) = &mut self.node {
                        node.handle_timeout(Instant::now());
                    }
                }
                Wake::Input => match input.stdin.read(&mut buffer) {
                    Ok(0) => {
                        self.finish_input();
                        break;
                    }
                    Ok(read) => {
                        self.feed(&buffer[..read]);
                        let output_waiting =
                            self.node.as_ref().map_or(0, |node| node.node.output_len());
                        if output_waiting >= WRITE_BATCH_BYTES {
                            self.commit_and_write()?;
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => {
                        tracing::warn!(
                            "reading stdin failed, treating it as the end of input: {err}"
                        );
                        self.finish_input();
                        break;
                    }
                },
            }
        }
        if let Some(node) = &mut self.node {
            node.handle_timeout(Instant::now());
        }
        self.commit_and_write()?;
        self.warn_if_orders_only_in_memory();
        Ok(())
    }

    /// Handles the messages in `chunk`. They arrived together, so they share
    /// one reading of the clock.
    fn feed(&mut self, chunk: &[u8]) {
        let now = Instant::now();
        let mut framer = std::mem::take(&mut self.framer);
        framer.push_to(chunk, &mut Feeding { runtime: self, now });
        self.framer = framer;
    }

    fn finish_input(&mut self) {
        let now = Instant::now();
        let mut framer = std::mem::take(&mut self.framer);
        framer.finish_to(&mut Feeding { runtime: self, now });
        self.framer = framer;
    }

    /// A whole line that is one well-formed message, once the node runs:
    /// read in one pass, the framer's scan skipped.
    fn take_whole_line(&mut self, bytes: &[u8], now: Instant) -> Offer {
        if self.journal_failure.is_some() {
            return Offer::Declined;
        }
        let Some(node) = self.node.as_mut() else {
            return Offer::Declined;
        };
        if !node.handle_well_formed(bytes, now) {
            return Offer::Declined;
        }
        self.after_message();
        Offer::Taken
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
                self.after_message();
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

    /// With `--commit-per-request`, each message's journal rows are
    /// committed before the next message is read.
    fn after_message(&mut self) {
        if self.config.policies.commit_per_request
            && let Err(err) = self.commit_journal()
        {
            self.journal_failure = Some(err);
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
        let data = self.data.take().expect("node starts once");
        let mut node = InProcessNode::new(self.config.node_config(self.seed), data, now);
        let (info, mut recovered) = self.open_journal(node_id);
        recovered.run_id = fresh_run_id();
        node.node.recover(info, recovered, now);
        self.node = Some(node);
    }

    /// Opens the journal of `node_id`, keeps it when it can be written, and
    /// says what the node may promise with it.
    fn open_journal(&mut self, node_id: &str) -> (JournalInfo, RecoveredQueue) {
        let policies = &self.config.policies;
        let opened = journal::open_for(
            &policies.data_dir,
            node_id,
            policies.order_history,
            UnjournaledOrders::when_volatile(policies.volatile_queue),
        );
        self.journal = opened.journal;
        (opened.info, opened.recovered)
    }

    /// Commits the burst's journal rows, then writes its replies.
    fn commit_and_write(&mut self) -> Result<(), Stop> {
        crate::diagnostics::flush();
        if let Some(err) = self.journal_failure.take() {
            return Err(Stop::JournalFailed(err));
        }
        self.commit_journal().map_err(Stop::JournalFailed)?;
        let Some(node) = &mut self.node else {
            return Ok(());
        };
        let written = node.node.write_output(&mut self.stdout);
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
        let rows = node.node.take_journal_writes();
        match &mut self.journal {
            Some(journal) => journal.commit(&rows).map_err(|err| err.0),
            None => Ok(()),
        }
    }

    fn warn_if_orders_only_in_memory(&self) {
        let Some(node) = &self.node else { return };
        let core = node.node.core();
        let pending = core.queue().pending_accepted_this_run();
        if !core.journal().durable && pending > 0 {
            tracing::warn!(
                pending,
                "exiting with queued orders held only in memory: they are lost"
            );
        }
    }
}

/// The runtime as the framer's sink for one chunk, read at `now`.
struct Feeding<'r> {
    runtime: &'r mut Runtime,
    now: Instant,
}

impl FrameSink for Feeding<'_> {
    fn frame(&mut self, frame: Frame<'_>) {
        self.runtime.handle_frame(frame, self.now);
    }

    fn whole_line(&mut self, _line: u64, bytes: &[u8]) -> Offer {
        self.runtime.take_whole_line(bytes, self.now)
    }
}
