//! Splits the input byte stream into messages.
//!
//! **The rule.** Input that is a sequence of JSON objects separated by
//! whitespace is framed into exactly those objects, whatever their layout:
//! one per line (Maelstrom's form), pretty-printed, with nested objects or
//! arrays starting at column 0, `\r\n` line ends, blank lines, several
//! objects on one line or none between them. The framer follows JSON's
//! strings and escapes, so a `}` inside a string never ends an object, and,
//! for an object that spans lines, JSON's grammar, so a `{` at column 0
//! inside it is a nested value wherever JSON allows one. (Byte order marks
//! are skipped between objects too.) Whether an object is a valid message is
//! for the parser to say, not the framer.
//!
//! **Everything else, best effort**, never at the cost of the rule:
//!
//! - A line whose first non-blank byte is not `{` is one frame, handed on
//!   for the parser to reject with its line number; so is an object
//!   followed on its last line by anything but whitespace or another
//!   object, together with the rest of that line.
//! - An object that breaks JSON's grammar is followed by its braces from
//!   there on (a string ending, at the latest, with its line) and handed on
//!   whole when they close, for the parser to report; a line starting with
//!   `{` at column 0 ends it first ([`Frame::Unterminated`]) and starts the
//!   next message.
//! - An object still open at a syntax error while a line inside it starts
//!   with `{` at column 0, or at the end of the input, is dropped
//!   ([`Frame::Unterminated`]) and the input is framed again from the first
//!   such line whose own object closed, or else from the first such line: a
//!   truncated message, or several in a row, do not swallow the well-formed
//!   messages after them ([`RestartPoints`]).
//! - A message longer than the size limit is followed to its end without
//!   being kept and reported ([`Frame::Oversized`]); so is a line that is
//!   not an object.
//!
//! **Cost.** A complete line starting with `{` is first offered whole to
//! the sink ([`FrameSink::whole_line`]): the runtime's parser takes it if
//! it is exactly one well-formed message, so a Maelstrom stream is read in
//! one pass (the newline search aside). A line declined goes through a fast
//! path that finds where an object ends by following only its braces and
//! strings (which agrees with the grammar); an object still open at the end
//! of its first line, and a line split between reads, go through the
//! byte-by-byte machine. No byte is
//! scanned more than [`MAX_SCANS_PER_BYTE`] times: the bytes framed again
//! after an object is dropped are never framed again a second time, however
//! the input goes on. [`Framer::bytes_scanned`] counts the work. Frames do
//! not depend on how the input is split into chunks.

use std::collections::VecDeque;

/// Default limit on one message's size, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Files saved by some Windows editors start with one; it is not JSON.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// [`Framer::bytes_scanned`] never exceeds this many times the bytes pushed:
/// a byte is scanned at most three times on its way through (the newline
/// search, the fast path or the garbage trim, the byte-by-byte machine), and
/// three more if it is framed again after a restart, which happens once at
/// most.
pub const MAX_SCANS_PER_BYTE: u64 = 6;

/// Whitespace at the end of a line that is not a message does not count
/// towards its size, up to this much (beyond it, whitespace alone could grow
/// what is kept without bound).
const WHITESPACE_ALLOWANCE: usize = 4096;

/// What the framer found in the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One candidate message (not yet parsed), starting on input line `line`.
    Message { line: u64, bytes: &'a [u8] },
    /// A message starting on `line` exceeded the size limit and was skipped.
    Oversized { line: u64 },
    /// An object starting on `line` never closed: it was given up on where
    /// a line starting with `{` took over, or at the end of input, and dropped.
    Unterminated { line: u64 },
}

/// Where frames go.
pub trait FrameSink {
    /// One frame, as [`Framer::push`] describes them.
    fn frame(&mut self, frame: Frame<'_>);

    /// A complete line from its first `{` (between frames, within the size
    /// limit, its newline left out), offered before the framer looks for
    /// where the object ends. A sink that parses it and finds exactly one
    /// JSON object followed by nothing but JSON whitespace may take it as
    /// that message: the framing rule frames such a line as exactly that
    /// object, so the framer's own scan can be skipped and the line is read
    /// once. Anything else is declined, and framed as usual.
    fn whole_line(&mut self, _line: u64, _bytes: &[u8]) -> Offer {
        Offer::Declined
    }
}

/// What a [`FrameSink`] made of a line offered whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Read as one message: the framer moves on to the next line.
    Taken,
    /// Left to the framer.
    Declined,
}

/// A sink of frames alone, declining every line.
struct FramesOnly<'f, F>(&'f mut F);

impl<F: FnMut(Frame<'_>)> FrameSink for FramesOnly<'_, F> {
    fn frame(&mut self, frame: Frame<'_>) {
        (self.0)(frame)
    }
}

/// Incremental splitter: feed it chunks as they arrive.
#[derive(Debug)]
pub struct Framer {
    max_message_bytes: usize,
    state: State,
    /// Bytes of the frame being assembled byte by byte (see [`State`]).
    kept: Vec<u8>,
    /// Line number of the next byte (1-based).
    line_no: u64,
    /// The next byte is at column 0.
    at_line_start: bool,
    /// Framing again the bytes of an abandoned object: no restart point
    /// is taken among them, so no byte is framed again twice.
    reframing: bool,
    bytes_scanned: u64,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

/// Where the byte-by-byte machine is.
#[derive(Debug)]
enum State {
    /// Between frames, where whitespace and byte order marks are skipped;
    /// `byte_order_mark` bytes of one have been seen.
    Between { byte_order_mark: usize },
    /// In a line that does not start an object; `kept` holds it from its
    /// first non-blank byte.
    Garbage(GarbageLine),
    /// In an object; `kept` holds it from its `{` (once oversized, only
    /// from its restart point, if any).
    Object(OpenObject),
    /// After an object closed, on its last line; `kept` holds it, then the
    /// whitespace after it.
    Trailing(ClosedObject),
}

const BETWEEN: State = State::Between { byte_order_mark: 0 };

#[derive(Debug)]
struct GarbageLine {
    line: u64,
    /// Bytes so far, from the first non-blank one.
    len: usize,
    /// Of those, up to the last non-blank one.
    content_len: usize,
    oversized: bool,
}

impl GarbageLine {
    /// More of the line (`bytes` holds no newline).
    fn extend(&mut self, bytes: &[u8], kept: &mut Vec<u8>, limit: usize) {
        if let Some(last) = bytes.iter().rposition(|byte| !byte.is_ascii_whitespace()) {
            self.content_len = self.len + last + 1;
        }
        self.len += bytes.len();
        if self.oversized {
            return;
        }
        if garbage_over_limit(self.content_len, self.len, limit) {
            self.oversized = true;
            kept.clear();
        } else {
            kept.extend_from_slice(bytes);
        }
    }

    fn frame<'a>(&self, kept: &'a [u8]) -> Frame<'a> {
        if self.oversized {
            Frame::Oversized { line: self.line }
        } else {
            Frame::Message {
                line: self.line,
                bytes: &kept[..self.content_len],
            }
        }
    }
}

/// An object whose braces closed. It is a message when only whitespace
/// follows it on its line, up to the newline, the end of input or another
/// object; anything else makes it and the rest of the line one frame of
/// garbage (the line is not a stream of objects).
#[derive(Debug)]
struct ClosedObject {
    first_line: u64,
    len: usize,
    oversized: bool,
    /// Whitespace after it so far (kept while it fits the limit).
    trailing: usize,
}

impl ClosedObject {
    fn frame<'a>(&self, kept: &'a [u8]) -> Frame<'a> {
        if self.oversized {
            Frame::Oversized {
                line: self.first_line,
            }
        } else {
            Frame::Message {
                line: self.first_line,
                bytes: &kept[..self.len],
            }
        }
    }

    /// Turns it and its trailing whitespace into the start of a line of
    /// garbage: a byte other than whitespace or `{` follows.
    fn into_garbage(self, kept: &mut Vec<u8>, limit: usize) -> GarbageLine {
        let len = self.len + self.trailing;
        let oversized = self.oversized || len > limit;
        if oversized {
            kept.clear();
        }
        GarbageLine {
            line: self.first_line,
            len,
            content_len: self.len,
            oversized,
        }
    }
}

/// Whether a line that is not an object is over the limit: its content is,
/// or its trailing whitespace passes the allowance. Both only grow as the
/// line arrives, so the verdict does not depend on where reads end.
fn garbage_over_limit(content_len: usize, len: usize, limit: usize) -> bool {
    content_len > limit || len > limit.saturating_add(WHITESPACE_ALLOWANCE)
}

#[derive(Debug)]
struct OpenObject {
    first_line: u64,
    /// Bytes so far, from its `{`.
    len: usize,
    oversized: bool,
    syntax: Syntax,
    /// The lines inside it starting with `{` at column 0, where framing
    /// starts again if the object is abandoned.
    restarts: RestartPoints,
}

#[derive(Debug)]
enum Syntax {
    /// JSON so far.
    Valid(JsonGrammar),
    /// JSON so far, but nested deeper than the size limit (so oversized):
    /// the grammar is no longer tracked, only the braces, which is exact
    /// for JSON. Framing cannot restart in it.
    TooDeep(BraceFollower),
    /// Not JSON: only its braces are followed.
    Broken(BraceFollower),
}

#[derive(Debug, Clone, Copy)]
struct RestartPoint {
    /// Its offset in `kept`.
    kept_at: usize,
    /// Bytes of the object before it: what is dropped if framing restarts.
    object_len: usize,
    line: u64,
}

/// The most lines starting with `{` at column 0 whose objects are still
/// open that an object remembers; past it the outermost are forgotten.
const MAX_OPEN_RESTART_POINTS: usize = 64;

/// The lines inside an open object that start with `{` at column 0: where
/// framing may start again if the object is abandoned.
///
/// Framing starts again at the first of them whose own object closed, a
/// whole object that may be a message, and otherwise at the first of them.
/// Lines before it may each start an object still open (a value cut off,
/// a line after it nested in it as the value that should have followed):
/// framed again, each would fail where the object around it failed.
#[derive(Debug, Default)]
struct RestartPoints {
    /// The first of them.
    first: Option<RestartPoint>,
    /// Those whose objects are still open, innermost last, with the depth
    /// their object opened at.
    open: VecDeque<(RestartPoint, usize)>,
    /// The first whose own object closed.
    closed: Option<RestartPoint>,
}

impl RestartPoints {
    /// Where framing starts again.
    fn chosen(&self) -> Option<RestartPoint> {
        self.closed.or(self.first)
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// A line starting with `{` at column 0 whose object opened at `depth`.
    fn opened(&mut self, point: RestartPoint, depth: usize) {
        if self.open.len() == MAX_OPEN_RESTART_POINTS {
            self.open.pop_front();
        }
        self.open.push_back((point, depth));
    }

    /// The object around them is now at `depth`: those opened deeper closed.
    fn closed_to(&mut self, depth: usize) {
        while let Some(&(point, opened)) = self.open.back() {
            if opened <= depth {
                break;
            }
            self.open.pop_back();
            // Popped innermost first: the one popped last started first.
            if self
                .closed
                .is_none_or(|closed| point.kept_at < closed.kept_at)
            {
                self.closed = Some(point);
            }
        }
    }

    /// `kept` lost its first `drained` bytes, all before the first point.
    fn drained(&mut self, drained: usize) {
        let points = (self.first.iter_mut())
            .chain(self.closed.iter_mut())
            .chain(self.open.iter_mut().map(|(point, _)| point));
        for point in points {
            point.kept_at -= drained;
        }
    }

    fn clear(&mut self) {
        *self = RestartPoints::default();
    }
}

impl OpenObject {
    /// Counts one more byte of the object, keeping it while it may still be
    /// a message or be framed again.
    fn keep(&mut self, byte: u8, kept: &mut Vec<u8>, limit: usize) {
        self.len += 1;
        if !self.oversized || !self.restarts.is_empty() {
            kept.push(byte);
        }
        if !self.oversized && self.len > limit {
            self.oversized = true;
            match self.restarts.first {
                Some(first) => {
                    kept.drain(..first.kept_at);
                    self.restarts.drained(first.kept_at);
                }
                None => kept.clear(),
            }
        }
        if self.oversized && kept.len() > limit {
            // Even what follows the restart point is too long to keep: framing
            // cannot restart there (a later line may become the point).
            self.restarts.clear();
            kept.clear();
        }
    }

    /// Gives up on restarting: only its braces are followed from now on.
    fn follow_braces(&mut self, syntax: Syntax, kept: &mut Vec<u8>) {
        self.syntax = syntax;
        if !self.restarts.is_empty() && self.oversized {
            kept.clear();
        }
        self.restarts.clear();
    }

    /// The object once its braces closed.
    fn closed(&self) -> ClosedObject {
        ClosedObject {
            first_line: self.first_line,
            len: self.len,
            oversized: self.oversized,
            trailing: 0,
        }
    }

    /// The frame for the object dropped before its braces closed.
    fn dropped(&self) -> Frame<'static> {
        dropped(self.first_line, self.oversized)
    }
}

fn dropped(line: u64, oversized: bool) -> Frame<'static> {
    if oversized {
        Frame::Oversized { line }
    } else {
        Frame::Unterminated { line }
    }
}

/// What to do after one step of the byte-by-byte machine.
enum Next {
    /// The byte is consumed.
    Done,
    /// The byte ended a frame without being part of it: step it again.
    Again,
    /// The open object, which started on `first_line`, is abandoned: frame
    /// again from `point`, then step the byte again.
    Restart {
        point: RestartPoint,
        first_line: u64,
    },
}

/// Where the next newline of a chunk is, searched for once per line.
#[derive(Clone, Copy)]
enum NextNewline {
    Unknown,
    At(usize),
    None,
}

impl Framer {
    pub fn new(max_message_bytes: usize) -> Self {
        Framer {
            max_message_bytes,
            state: BETWEEN,
            kept: Vec::new(),
            line_no: 1,
            at_line_start: true,
            reframing: false,
            bytes_scanned: 0,
        }
    }

    /// Between frames, with no part of a byte order mark seen.
    fn is_between_frames(&self) -> bool {
        matches!(self.state, State::Between { byte_order_mark: 0 })
    }

    /// Bytes examined so far, counting each pass over a byte: what the
    /// framing cost, for tests that bound it by the input's length.
    pub fn bytes_scanned(&self) -> u64 {
        self.bytes_scanned
    }

    /// Feeds one chunk of input, calling `on_frame` for each frame it completes.
    pub fn push(&mut self, chunk: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) {
        self.push_to(chunk, &mut FramesOnly(on_frame));
    }

    /// Signals the end of input: what is still open is framed or dropped.
    pub fn finish(&mut self, on_frame: &mut impl FnMut(Frame<'_>)) {
        self.finish_to(&mut FramesOnly(on_frame));
    }

    /// [`Self::push`] to a sink that may take complete lines whole (see
    /// [`FrameSink::whole_line`]).
    pub fn push_to(&mut self, chunk: &[u8], sink: &mut impl FrameSink) {
        let mut at = 0;
        let mut next_newline = NextNewline::Unknown;
        while at < chunk.len() {
            if self.is_between_frames() {
                let newline = match next_newline {
                    NextNewline::At(newline) if newline >= at => Some(newline),
                    NextNewline::None => None,
                    _ => {
                        let found = memchr::memchr(b'\n', &chunk[at..]);
                        self.bytes_scanned += found.map_or(chunk.len() - at, |len| len + 1) as u64;
                        next_newline =
                            found.map_or(NextNewline::None, |len| NextNewline::At(at + len));
                        found.map(|len| at + len)
                    }
                };
                if let Some(newline) = newline {
                    match self.frame_line(&chunk[at..newline], sink) {
                        None => {
                            self.line_no += 1;
                            self.at_line_start = true;
                            at = newline + 1;
                            continue;
                        }
                        Some(object_start) => {
                            if object_start > 0 {
                                self.at_line_start = false;
                            }
                            at += object_start;
                        }
                    }
                }
            }
            at += self.feed_bytes(&chunk[at..], sink);
        }
    }

    /// [`Self::finish`] to a sink.
    pub fn finish_to(&mut self, sink: &mut impl FrameSink) {
        loop {
            match std::mem::replace(&mut self.state, BETWEEN) {
                State::Between { byte_order_mark: 0 } => break,
                State::Between { byte_order_mark } => {
                    // A line ending in part of a byte order mark: garbage.
                    self.start_garbage(&BYTE_ORDER_MARK[..byte_order_mark]);
                }
                State::Garbage(line) => {
                    sink.frame(line.frame(&self.kept));
                    break;
                }
                State::Trailing(object) => {
                    sink.frame(object.frame(&self.kept));
                    break;
                }
                State::Object(object) => {
                    if let (Syntax::Valid(_), Some(restart)) =
                        (&object.syntax, object.restarts.chosen())
                    {
                        self.restart(restart, object.first_line, sink);
                    } else {
                        sink.frame(object.dropped());
                        break;
                    }
                }
            }
        }
        self.kept.clear();
    }

    /// The fast path: frames the complete line `line` (its newline not
    /// included) from between frames. Returns where an object starts that is
    /// still open at the end of the line, for the byte-by-byte machine.
    fn frame_line(&mut self, line: &[u8], sink: &mut impl FrameSink) -> Option<usize> {
        let mut at = 0;
        loop {
            while at < line.len() {
                if line[at].is_ascii_whitespace() {
                    at += 1;
                } else if line[at..].starts_with(BYTE_ORDER_MARK) {
                    at += BYTE_ORDER_MARK.len();
                } else {
                    break;
                }
            }
            let rest = &line[at..];
            if rest.is_empty() {
                return None;
            }
            if rest[0] != b'{' {
                sink.frame(self.garbage(rest));
                return None;
            }
            if rest.len() <= self.max_message_bytes
                && sink.whole_line(self.line_no, rest) == Offer::Taken
            {
                self.bytes_scanned += rest.len() as u64;
                return None;
            }
            let Some(end) = object_end(rest) else {
                self.bytes_scanned += rest.len() as u64;
                return Some(at);
            };
            let after = rest[end + 1..]
                .iter()
                .position(|byte| !byte.is_ascii_whitespace())
                .map_or(rest.len(), |len| end + 1 + len);
            self.bytes_scanned += after as u64;
            if after < rest.len() && rest[after] != b'{' {
                // Not followed by whitespace or another object: not a message.
                sink.frame(self.garbage(rest));
                return None;
            }
            let object = &rest[..=end];
            sink.frame(if object.len() > self.max_message_bytes {
                Frame::Oversized { line: self.line_no }
            } else {
                Frame::Message {
                    line: self.line_no,
                    bytes: object,
                }
            });
            at += after;
        }
    }

    /// The frame for the rest of a line, from its first non-blank byte,
    /// that is not a message stream.
    fn garbage<'a>(&mut self, rest: &'a [u8]) -> Frame<'a> {
        let content = rest.trim_ascii_end();
        self.bytes_scanned += (rest.len() - content.len()) as u64;
        if garbage_over_limit(content.len(), rest.len(), self.max_message_bytes) {
            Frame::Oversized { line: self.line_no }
        } else {
            Frame::Message {
                line: self.line_no,
                bytes: content,
            }
        }
    }

    /// Runs the byte-by-byte machine over `bytes` until it is back between
    /// frames or the bytes run out. Returns how many bytes it consumed.
    fn feed_bytes(&mut self, bytes: &[u8], sink: &mut impl FrameSink) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            if let State::Garbage(line) = &mut self.state {
                // The rest of the line in one piece.
                let rest = &bytes[at..];
                let newline = memchr::memchr(b'\n', rest);
                let len = newline.unwrap_or(rest.len());
                self.bytes_scanned += 2 * len as u64;
                line.extend(&rest[..len], &mut self.kept, self.max_message_bytes);
                at += len;
                if len > 0 {
                    self.at_line_start = false;
                }
                if newline.is_none() {
                    break;
                }
            }
            self.feed_byte(bytes[at], sink);
            at += 1;
            if self.is_between_frames() {
                break;
            }
        }
        at
    }

    fn feed_byte(&mut self, byte: u8, sink: &mut impl FrameSink) {
        self.bytes_scanned += 1;
        let column_zero = self.at_line_start;
        loop {
            match self.step(byte, column_zero, sink) {
                Next::Done => break,
                Next::Again => {}
                Next::Restart { point, first_line } => {
                    let position = (self.line_no, self.at_line_start);
                    self.restart(point, first_line, sink);
                    debug_assert_eq!(position, (self.line_no, self.at_line_start));
                }
            }
        }
        if byte == b'\n' {
            self.line_no += 1;
            self.at_line_start = true;
        } else {
            self.at_line_start = false;
        }
    }

    /// One step of the byte-by-byte machine.
    fn step(&mut self, byte: u8, column_zero: bool, sink: &mut impl FrameSink) -> Next {
        let limit = self.max_message_bytes;
        match &mut self.state {
            State::Between { byte_order_mark: 0 } => {
                match byte {
                    _ if byte.is_ascii_whitespace() => {}
                    b'{' => self.start_object(),
                    _ if byte == BYTE_ORDER_MARK[0] => {
                        self.state = State::Between { byte_order_mark: 1 }
                    }
                    _ => {
                        self.start_garbage(&[]);
                        return Next::Again;
                    }
                }
                Next::Done
            }
            State::Between { byte_order_mark } => {
                let seen = *byte_order_mark;
                if byte == BYTE_ORDER_MARK[seen] {
                    *byte_order_mark = (seen + 1) % BYTE_ORDER_MARK.len();
                    return Next::Done;
                }
                // Not a byte order mark after all: its bytes start a line.
                self.start_garbage(&BYTE_ORDER_MARK[..seen]);
                Next::Again
            }
            State::Garbage(line) => {
                if byte == b'\n' {
                    sink.frame(line.frame(&self.kept));
                    self.state = BETWEEN;
                } else {
                    line.extend(&[byte], &mut self.kept, limit);
                }
                Next::Done
            }
            State::Trailing(object) => match byte {
                b'\n' | b'{' => {
                    sink.frame(object.frame(&self.kept));
                    self.state = BETWEEN;
                    if byte == b'{' {
                        Next::Again
                    } else {
                        Next::Done
                    }
                }
                _ if byte.is_ascii_whitespace() => {
                    object.trailing += 1;
                    if !object.oversized && object.len + object.trailing <= limit {
                        self.kept.push(byte);
                    }
                    Next::Done
                }
                _ => {
                    let State::Trailing(object) = std::mem::replace(&mut self.state, BETWEEN)
                    else {
                        unreachable!("in the trailing state")
                    };
                    self.state = State::Garbage(object.into_garbage(&mut self.kept, limit));
                    Next::Again
                }
            },
            State::Object(object) => {
                let line_starts_with_brace = column_zero && byte == b'{';
                let broken = matches!(object.syntax, Syntax::Broken(_));
                match &mut object.syntax {
                    Syntax::TooDeep(follower) | Syntax::Broken(follower) => {
                        if line_starts_with_brace && broken {
                            // Not JSON, so not a nested value either: this
                            // `{` starts the next message.
                            sink.frame(object.dropped());
                            self.state = BETWEEN;
                            return Next::Again;
                        }
                        let closed = follower.step(byte);
                        object.keep(byte, &mut self.kept, limit);
                        if closed {
                            self.state = State::Trailing(object.closed());
                        }
                        Next::Done
                    }
                    Syntax::Valid(grammar) => {
                        let restart_point =
                            (line_starts_with_brace && !self.reframing).then_some(RestartPoint {
                                kept_at: self.kept.len(),
                                object_len: object.len,
                                line: self.line_no,
                            });
                        if object.restarts.first.is_none() {
                            object.restarts.first = restart_point;
                        }
                        match grammar.step(byte) {
                            Ok(GrammarStep::Open) => {
                                if let Some(point) = restart_point {
                                    object.restarts.opened(point, grammar.depth());
                                } else if matches!(byte, b'}' | b']') {
                                    object.restarts.closed_to(grammar.depth());
                                }
                                if grammar.depth() > limit {
                                    // Deeper than any message may be long: the
                                    // nesting is no longer worth remembering.
                                    let too_deep = Syntax::TooDeep(grammar.follower());
                                    object.follow_braces(too_deep, &mut self.kept);
                                }
                                object.keep(byte, &mut self.kept, limit);
                                Next::Done
                            }
                            Ok(GrammarStep::Closed) => {
                                object.keep(byte, &mut self.kept, limit);
                                self.state = State::Trailing(object.closed());
                                Next::Done
                            }
                            Err(SyntaxError) => match object.restarts.chosen() {
                                Some(point) => Next::Restart {
                                    point,
                                    first_line: object.first_line,
                                },
                                None => {
                                    let broken = Syntax::Broken(grammar.follower());
                                    object.follow_braces(broken, &mut self.kept);
                                    Next::Again
                                }
                            },
                        }
                    }
                }
            }
        }
    }

    fn start_object(&mut self) {
        self.kept.clear();
        let mut grammar = JsonGrammar::default();
        let opened = grammar.step(b'{');
        debug_assert!(matches!(opened, Ok(GrammarStep::Open)));
        let mut object = OpenObject {
            first_line: self.line_no,
            len: 0,
            oversized: false,
            syntax: Syntax::Valid(grammar),
            restarts: RestartPoints::default(),
        };
        object.keep(b'{', &mut self.kept, self.max_message_bytes);
        self.state = State::Object(object);
    }

    fn start_garbage(&mut self, first_bytes: &[u8]) {
        self.kept.clear();
        let mut line = GarbageLine {
            line: self.line_no,
            len: 0,
            content_len: 0,
            oversized: false,
        };
        line.extend(first_bytes, &mut self.kept, self.max_message_bytes);
        self.state = State::Garbage(line);
    }

    /// Drops the open object (which started on `first_line`) and frames
    /// its bytes again from `restart`, a line inside it starting with `{`
    /// at column 0 ([`RestartPoints`]): that `{` may start the next message.
    fn restart(&mut self, restart: RestartPoint, first_line: u64, sink: &mut impl FrameSink) {
        sink.frame(dropped(
            first_line,
            restart.object_len > self.max_message_bytes,
        ));
        let kept = std::mem::take(&mut self.kept);
        self.state = BETWEEN;
        self.line_no = restart.line;
        self.at_line_start = true;
        let reframing = std::mem::replace(&mut self.reframing, true);
        self.push_to(&kept[restart.kept_at..], sink);
        self.reframing = reframing;
    }
}

/// Where the object starting at `line[0]` (a `{`) ends, following braces and
/// strings only: the index of its closing `}`, or `None` if it is still open
/// at the end of `line`, which holds no newline. For any line this agrees
/// with the byte-by-byte machine: the grammar and [`BraceFollower`] agree on
/// strings and braces up to the first syntax error, and the follower takes
/// over from there.
fn object_end(line: &[u8]) -> Option<usize> {
    if memchr::memchr(b'\\', line).is_some() {
        return object_end_with_escapes(line);
    }
    // Without escapes a brace is inside a string exactly when an odd number
    // of quotes come before it. A compact line has a handful of braces:
    // find them (vectorised), and count the quotes between them.
    let mut depth = 0usize;
    let mut in_string = false;
    let mut counted_to = 0;
    for at in memchr::memchr2_iter(b'{', b'}', line) {
        let quotes = count_quotes(&line[counted_to..at]);
        in_string ^= quotes % 2 == 1;
        counted_to = at;
        if in_string {
            continue;
        }
        if line[at] == b'{' {
            depth += 1;
        } else {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(at);
            }
        }
    }
    None
}

/// How many `"` bytes `bytes` holds, eight bytes at a time.
fn count_quotes(bytes: &[u8]) -> usize {
    let mut chunks = bytes.chunks_exact(8);
    let mut count = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        count += byte_mask(word, b'"').count_ones() as usize;
    }
    count
        + chunks
            .remainder()
            .iter()
            .filter(|&&byte| byte == b'"')
            .count()
}

/// [`object_end`] for a line with backslashes, which may escape quotes.
fn object_end_with_escapes(line: &[u8]) -> Option<usize> {
    // Only quotes, backslashes and braces matter. Eight bytes are looked at
    // at once (a word's byte masks), and only the bytes that matter are
    // visited: a compact line is mostly letters and digits.
    let mut depth = 0usize;
    let mut in_string = false;
    // The first byte of the next word is escaped.
    let mut escaped = false;
    for (word_index, chunk) in line.chunks(8).enumerate() {
        let word = match <[u8; 8]>::try_from(chunk) {
            Ok(bytes) => u64::from_le_bytes(bytes),
            Err(_) => {
                let mut bytes = [0u8; 8];
                bytes[..chunk.len()].copy_from_slice(chunk);
                u64::from_le_bytes(bytes)
            }
        };
        // Padding zeros match none of these.
        let mut interesting = byte_mask(word, b'"')
            | byte_mask(word, b'\\')
            | byte_mask(word, b'{')
            | byte_mask(word, b'}');
        if std::mem::take(&mut escaped) {
            interesting &= !0x80;
        }
        while interesting != 0 {
            let index = (interesting.trailing_zeros() / 8) as usize;
            interesting &= interesting - 1;
            match (in_string, chunk[index]) {
                (true, b'\\') => {
                    // The next byte is taken literally, in this word or the next.
                    if index == 7 {
                        escaped = true;
                    } else {
                        interesting &= !(0x80 << ((index + 1) * 8));
                    }
                }
                (true, b'"') => in_string = false,
                (true, _) => {}
                (false, b'"') => in_string = true,
                (false, b'{') => depth += 1,
                (false, b'}') => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(word_index * 8 + index);
                    }
                }
                // A backslash outside a string: not JSON, and no brace.
                (false, _) => {}
            }
        }
    }
    None
}

/// The high bit of each byte of `word` that equals `byte`, exactly (no
/// false positives from borrows between bytes).
fn byte_mask(word: u64, byte: u8) -> u64 {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const SEVEN_BITS: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    let zero_where_equal = word ^ (LOW * u64::from(byte));
    !(((zero_where_equal & SEVEN_BITS) + SEVEN_BITS) | zero_where_equal | SEVEN_BITS)
}

/// Follows the braces of an object that is not JSON, to find where it ends.
#[derive(Debug, Default)]
struct BraceFollower {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl BraceFollower {
    /// Returns whether `byte` closed the object.
    fn step(&mut self, byte: u8) -> bool {
        if self.in_string {
            if byte == b'\n' {
                // A string never goes past its line.
                self.in_string = false;
                self.escaped = false;
            } else if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
            }
            return false;
        }
        match byte {
            b'"' => self.in_string = true,
            b'{' => self.depth += 1,
            b'}' => {
                self.depth = self.depth.saturating_sub(1);
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }
}

/// JSON's grammar, one byte at a time, for the object a message is.
/// Literals and numbers are taken as runs of their characters, not checked.
#[derive(Debug, Default)]
struct JsonGrammar {
    /// The open objects and arrays, innermost last.
    containers: Containers,
    expect: Expect,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value: after `:`, after `,` in an array, and at the start.
    #[default]
    Value,
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object.
    Key,
    InKey,
    InKeyEscape,
    Colon,
    InString,
    InStringEscape,
    /// In a number, `true`, `false` or `null`.
    InScalar,
    /// After a value: `,` or the end of its container.
    CommaOrEnd,
}

enum GrammarStep {
    /// The object is still open.
    Open,
    /// This byte closed it.
    Closed,
}

struct SyntaxError;

impl JsonGrammar {
    fn step(&mut self, byte: u8) -> Result<GrammarStep, SyntaxError> {
        use Expect::*;
        self.expect = match (self.expect, byte) {
            (InKey, b'"') => Colon,
            (InString, b'"') => CommaOrEnd,
            (InKey, b'\\') => InKeyEscape,
            (InString, b'\\') => InStringEscape,
            (InKey | InString, 0..=0x1F) => return Err(SyntaxError),
            (InKey | InString, _) => self.expect,
            (InKeyEscape, _) if is_escape(byte) => InKey,
            (InStringEscape, _) if is_escape(byte) => InString,
            (InKeyEscape | InStringEscape, _) => return Err(SyntaxError),
            (InScalar, _) if is_scalar(byte) => InScalar,
            (InScalar, _) => {
                self.expect = CommaOrEnd;
                return self.step(byte);
            }
            (_, b' ' | b'\t' | b'\n' | b'\r') => self.expect,
            (Value | ValueOrEnd, b'{') => {
                self.containers.push(Container::Object);
                KeyOrEnd
            }
            (Value | ValueOrEnd, b'[') => {
                self.containers.push(Container::Array);
                ValueOrEnd
            }
            (Value | ValueOrEnd, b'"') => InString,
            (Value | ValueOrEnd, _) if is_scalar(byte) => InScalar,
            (ValueOrEnd, b']') => return Ok(self.close()),
            (KeyOrEnd, b'}') => return Ok(self.close()),
            (KeyOrEnd | Key, b'"') => InKey,
            (Colon, b':') => Value,
            (CommaOrEnd, b',') => match self.containers.innermost() {
                Some(Container::Object) => Key,
                _ => Value,
            },
            (CommaOrEnd, b'}') if self.containers.innermost() == Some(Container::Object) => {
                return Ok(self.close());
            }
            (CommaOrEnd, b']') if self.containers.innermost() == Some(Container::Array) => {
                return Ok(self.close());
            }
            _ => return Err(SyntaxError),
        };
        Ok(GrammarStep::Open)
    }

    fn close(&mut self) -> GrammarStep {
        self.containers.pop();
        self.expect = Expect::CommaOrEnd;
        if self.containers.is_empty() {
            GrammarStep::Closed
        } else {
            GrammarStep::Open
        }
    }

    fn depth(&self) -> usize {
        self.containers.len
    }

    /// A [`BraceFollower`] that goes on from here as if it had followed the
    /// object from its start: before a syntax error the two agree.
    fn follower(&self) -> BraceFollower {
        BraceFollower {
            depth: self.containers.objects,
            in_string: matches!(
                self.expect,
                Expect::InKey | Expect::InKeyEscape | Expect::InString | Expect::InStringEscape
            ),
            escaped: matches!(self.expect, Expect::InKeyEscape | Expect::InStringEscape),
        }
    }
}

/// What may follow `\` in a JSON string.
fn is_escape(byte: u8) -> bool {
    matches!(
        byte,
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' | b'u'
    )
}

/// The characters of numbers and of `true`, `false` and `null`.
fn is_scalar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'+' | b'.')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

/// A stack of containers, one bit each.
#[derive(Debug, Default)]
struct Containers {
    /// Bit `i % 64` of word `i / 64` is set when container `i` is an object.
    bits: Vec<u64>,
    len: usize,
    objects: usize,
}

impl Containers {
    fn push(&mut self, container: Container) {
        let (word, bit) = (self.len / 64, self.len % 64);
        if word == self.bits.len() {
            self.bits.push(0);
        }
        if container == Container::Object {
            self.bits[word] |= 1 << bit;
            self.objects += 1;
        } else {
            self.bits[word] &= !(1 << bit);
        }
        self.len += 1;
    }

    fn pop(&mut self) {
        if self.innermost() == Some(Container::Object) {
            self.objects -= 1;
        }
        self.len -= 1;
    }

    fn innermost(&self) -> Option<Container> {
        let top = self.len.checked_sub(1)?;
        Some(if self.bits[top / 64] >> (top % 64) & 1 == 1 {
            Container::Object
        } else {
            Container::Array
        })
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// How deeply `json` nests, strings taken into account.
pub(crate) fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}
#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Message(u64, String),
        Oversized(u64),
        Unterminated(u64),
    }

    fn frames_of(chunks: &[&[u8]], max: usize) -> Vec<Owned> {
        let mut framer = Framer::new(max);
        let mut out = Vec::new();
        let mut collect = |frame: Frame<'_>| {
            out.push(match frame {
                Frame::Message { line, bytes } => {
                    Owned::Message(line, String::from_utf8_lossy(bytes).into_owned())
                }
                Frame::Oversized { line } => Owned::Oversized(line),
                Frame::Unterminated { line } => Owned::Unterminated(line),
            })
        };
        for chunk in chunks {
            framer.push(chunk, &mut collect);
        }
        framer.finish(&mut collect);
        out
    }

    fn frames(input: &str) -> Vec<Owned> {
        frames_of(&[input.as_bytes()], 1 << 20)
    }

    fn message(line: u64, text: &str) -> Owned {
        Owned::Message(line, text.into())
    }

    /// The framer's work on `input` pushed whole, per input byte.
    fn work_per_byte(input: &[u8]) -> f64 {
        let mut framer = Framer::new(1 << 20);
        framer.push(input, &mut |_| {});
        framer.finish(&mut |_| {});
        framer.bytes_scanned() as f64 / input.len() as f64
    }

    const MAX_WORK_PER_BYTE: f64 = MAX_SCANS_PER_BYTE as f64;

    #[test]
    fn compact_lines_are_messages_with_their_line_numbers() {
        assert_eq!(
            frames("{\"a\":1}\n{\"b\":2}\n"),
            vec![
                Owned::Message(1, "{\"a\":1}".into()),
                Owned::Message(2, "{\"b\":2}".into())
            ]
        );
    }

    #[test]
    fn crlf_blank_lines_and_missing_final_newline_are_accepted() {
        assert_eq!(
            frames("\r\n{\"a\":1}\r\n\r\n   \n{\"b\":2}"),
            vec![
                Owned::Message(2, "{\"a\":1}".into()),
                Owned::Message(5, "{\"b\":2}".into())
            ]
        );
    }

    #[test]
    fn pretty_printed_object_is_gathered_over_lines() {
        let input = "{\n  \"src\": \"c\",\n  \"body\": {\n    \"t\": \"}{\"\n  }\n}\n{\"x\":1}\n";
        let out = frames(input);
        assert_eq!(out.len(), 2);
        let Owned::Message(1, text) = &out[0] else {
            panic!("{out:?}")
        };
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["body"]["t"], "}{");
        assert_eq!(out[1], Owned::Message(7, "{\"x\":1}".into()));
    }

    #[test]
    fn split_chunks_give_the_same_frames() {
        let input = b"{\"a\":1}\n{\n \"b\": [1,\n 2]\n}\n{\"c\":3}\n";
        let whole = frames_of(&[input], 1 << 20);
        for cut in 0..input.len() {
            let (left, right) = input.split_at(cut);
            assert_eq!(frames_of(&[left, right], 1 << 20), whole, "cut at {cut}");
        }
    }

    #[test]
    fn garbage_line_with_open_brace_does_not_swallow_the_next_message() {
        let out = frames("this is not json {\n{\"a\":1}\n");
        assert_eq!(
            out,
            vec![
                Owned::Message(1, "this is not json {".into()),
                Owned::Message(2, "{\"a\":1}".into())
            ]
        );
    }

    #[test]
    fn unindented_nested_object_at_column_zero_stays_in_its_message() {
        let input = "{\n\"src\": \"c\",\n\"body\": {\n\"items\": [\n{\n\"x\": 1\n}\n]\n}\n}\n";
        let out = frames(input);
        assert_eq!(out.len(), 1, "{out:?}");
        let Owned::Message(1, text) = &out[0] else {
            panic!("{out:?}")
        };
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["body"]["items"][0]["x"], 1);
    }

    #[test]
    fn truncated_message_does_not_swallow_pretty_messages_after_it() {
        let pretty = "{\n\"src\": \"c\",\n\"body\": {\n\"t\": 1\n}\n}\n";
        for truncated in [
            "{\n\"src\": \"c\",\n\"body\": {\n\"msg_id\": 1,\n",
            "{\n\"body\": {\n",
        ] {
            let out = frames(&format!("{truncated}{pretty}"));
            assert_eq!(out[0], Owned::Unterminated(1), "{out:?}");
            assert!(matches!(out[1], Owned::Message(..)), "{out:?}");
            assert_eq!(out.len(), 2, "{out:?}");
        }
    }

    #[test]
    fn byte_order_mark_before_the_first_message_is_ignored() {
        assert_eq!(
            frames("\u{feff}{\"a\":1}\n"),
            vec![Owned::Message(1, "{\"a\":1}".into())]
        );
    }

    #[test]
    fn nesting_depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(br#"{"a":[{"b":"[[[["}]}"#), 3);
        assert_eq!(nesting_depth(b"1"), 0);
    }

    #[test]
    fn unterminated_object_is_abandoned_when_the_next_message_starts() {
        let out = frames("{\"a\": [1,\n{\"b\":2}\n");
        assert_eq!(
            out,
            vec![
                Owned::Unterminated(1),
                Owned::Message(2, "{\"b\":2}".into())
            ]
        );
        assert_eq!(frames("{\"a\": [1,\n  2"), vec![Owned::Unterminated(1)]);
    }

    #[test]
    fn oversized_line_is_skipped_and_the_stream_goes_on() {
        let long = format!("{{\"x\":\"{}\"}}\n{{\"a\":1}}\n", "y".repeat(100));
        let chunks: Vec<&[u8]> = long.as_bytes().chunks(7).collect();
        let out = frames_of(&chunks, 50);
        assert_eq!(
            out,
            vec![Owned::Oversized(1), Owned::Message(2, "{\"a\":1}".into())]
        );
    }

    #[test]
    fn oversized_line_arriving_whole_is_skipped_too() {
        let input = format!("{{\"x\":\"{}\"}}\n{{\"a\":1}}\n", "y".repeat(100));
        assert_eq!(
            frames_of(&[input.as_bytes()], 50),
            vec![Owned::Oversized(1), Owned::Message(2, "{\"a\":1}".into())]
        );
    }

    #[test]
    fn oversized_multi_line_object_is_skipped_to_the_next_message() {
        let body: String = (0..20).map(|i| format!("  \"k{i}\": {i},\n")).collect();
        let input = format!("{{\n{body}  \"end\": 0\n}}\n{{\"a\":1}}\n");
        let out = frames_of(&[input.as_bytes()], 60);
        assert_eq!(out[0], Owned::Oversized(1));
        assert_eq!(out.last(), Some(&Owned::Message(24, "{\"a\":1}".into())));
        assert_eq!(out.len(), 2, "{out:?}");
    }

    // Issue 7, item 2: blank lines inside an open object re-trimmed everything
    // gathered so far, each time (quadratic).
    #[test]
    fn blank_lines_inside_an_open_object_cost_linear_work() {
        let message = r#""src":"c1","dest":"n1","body":{"type":"echo","msg_id":1,"echo":"x"}}"#;
        for blank_line in ["\n", "  \r\n", "\t \n"] {
            for lines in [1_000, 100_000] {
                let input = format!("{{\n{}{message}\n", blank_line.repeat(lines));
                let out = frames(&input);
                assert!(
                    matches!(&out[..], [Owned::Message(1, text)] if text.ends_with("\"x\"}}")),
                    "{blank_line:?} x {lines}: {out:?}"
                );
                let work = work_per_byte(input.as_bytes());
                assert!(
                    work <= MAX_WORK_PER_BYTE,
                    "{blank_line:?} x {lines}: {work} per byte"
                );
            }
        }
    }

    // Issue 7, item 4a: a `}` inside a string balanced the first line's
    // braces, so the line was taken for a whole message.
    #[test]
    fn brace_inside_a_string_does_not_end_the_object() {
        let first =
            r#"{"src":"c1","dest":"n1","note":"}","body":{"type":"echo","msg_id":1,"echo":"x"}"#;
        assert_eq!(
            frames(&format!("{first}\n}}\n{{\"a\":1}}\n")),
            [message(1, &format!("{first}\n}}")), message(3, "{\"a\":1}")]
        );
    }

    // Issue 7, item 4b: a one-line object at column 0 as the value of
    // `"body":` was taken for the next message.
    #[test]
    fn object_at_column_zero_where_a_value_may_go_is_nested() {
        let input = "{\n  \"src\": \"c1\",\n  \"body\":\n{\"type\": \"echo\", \"msg_id\": 1}\n}\n";
        assert_eq!(frames(input), [message(1, input.trim_end())]);
        let in_array = "{\"a\": [\n{\"b\": 1},\n{\"b\": 2}\n]}";
        assert_eq!(frames(in_array), [message(1, in_array)]);
    }

    #[test]
    fn several_objects_on_one_line_are_separate_messages() {
        assert_eq!(
            frames("{\"a\":1} {\"b\":\"}{\"}{\"c\":3}\r\n"),
            [
                message(1, "{\"a\":1}"),
                message(1, "{\"b\":\"}{\"}"),
                message(1, "{\"c\":3}")
            ]
        );
    }

    #[test]
    fn object_followed_on_its_line_by_other_text_is_not_a_message() {
        assert_eq!(
            frames("{\"a\":1} {\"b\":2} trailing\n{\"c\":3}}\n{\"d\":4}"),
            [
                message(1, "{\"a\":1}"),
                message(1, "{\"b\":2} trailing"),
                message(2, "{\"c\":3}}"),
                message(3, "{\"d\":4}")
            ]
        );
    }

    #[test]
    fn truncated_object_is_framed_again_from_its_first_line_starting_with_a_brace() {
        // Nested, `{"b":2}` would be valid; `{"c":3}` without a comma is not.
        assert_eq!(
            frames("{\"a\": [1,\n{\"b\":2}\n{\"c\":3}\n"),
            [
                Owned::Unterminated(1),
                message(2, "{\"b\":2}"),
                message(3, "{\"c\":3}")
            ]
        );
        // A syntax error later on a line does the same.
        assert_eq!(
            frames("{\"a\": [1,\n{\"b\":2}\nnot json\n"),
            [
                Owned::Unterminated(1),
                message(2, "{\"b\":2}"),
                message(3, "not json")
            ]
        );
    }

    #[test]
    fn object_breaking_the_grammar_is_handed_on_whole_when_its_braces_close() {
        // A missing comma, then an indented line with a `{`.
        let broken = "{\"a\": 1\n\"b\": {\"c\": \"{\"},\n}";
        assert_eq!(
            frames(&format!("{broken}\n{{\"d\":4}}\n")),
            [message(1, broken), message(4, "{\"d\":4}")]
        );
        // Strings end with their line: an unclosed quote swallows nothing.
        assert_eq!(
            frames("{\"a\": \"open\n}\n{\"d\":4}\n"),
            [message(1, "{\"a\": \"open\n}"), message(3, "{\"d\":4}")]
        );
    }

    #[test]
    fn object_breaking_the_grammar_ends_at_a_line_starting_with_a_brace() {
        assert_eq!(
            frames("{\"a\": 1 2,\n  \"b\": [\n{\"d\":4}\n"),
            [Owned::Unterminated(1), message(3, "{\"d\":4}")]
        );
    }

    #[test]
    fn framing_again_after_a_restart_never_restarts_inside_those_bytes() {
        // Every line a nested value at column 0, none closing: at the end of
        // input the first object is dropped and the rest framed once more,
        // as one object that is dropped in turn.
        let input = "{\"a\":[\n".repeat(10_000);
        assert_eq!(
            frames(&input),
            [Owned::Unterminated(1), Owned::Unterminated(2)]
        );
        let work = work_per_byte(input.as_bytes());
        assert!(work <= MAX_WORK_PER_BYTE, "{work} per byte");
    }

    #[test]
    fn truncated_objects_in_a_row_do_not_swallow_the_message_after_them() {
        // Each truncated line takes the next as the value it lacked; the
        // first line whose own object closed is where framing starts again.
        assert_eq!(
            frames("{\"a\":\n{\"a\":\n{\"m\":3}\n{\"m\":4}\n"),
            [
                Owned::Unterminated(1),
                message(3, "{\"m\":3}"),
                message(4, "{\"m\":4}")
            ]
        );
        // The same at the end of the input.
        assert_eq!(
            frames("{\"a\":\n{\"a\":\n{\"m\":3}\n"),
            [Owned::Unterminated(1), message(3, "{\"m\":3}")]
        );
        // More truncated lines than the open ones remembered.
        let many = format!(
            "{}{{\"m\":1}}\n{{\"m\":2}}\n",
            "{\"a\":\n".repeat(3 * MAX_OPEN_RESTART_POINTS)
        );
        let after = 3 * MAX_OPEN_RESTART_POINTS as u64;
        assert_eq!(
            frames(&many),
            [
                Owned::Unterminated(1),
                message(after + 1, "{\"m\":1}"),
                message(after + 2, "{\"m\":2}")
            ]
        );
    }

    #[test]
    fn message_with_a_nested_object_at_column_zero_after_a_truncated_one_is_framed_whole() {
        // The message's body, at column 0, closes first; the message itself
        // starts earlier and closes too, so framing starts again there.
        let message_lines = "{\"src\":\"c1\",\"body\":\n{\"type\":\"echo\"}\n}";
        assert_eq!(
            frames(&format!("{{\"a\":\n{message_lines}\n{{\"m\":5}}\n")),
            [
                Owned::Unterminated(1),
                message(2, message_lines),
                message(5, "{\"m\":5}")
            ]
        );
    }

    #[test]
    fn framing_work_is_linear_whatever_the_shape_of_the_input() {
        let shapes: [(&str, String); 10] = [
            ("blank lines", "\n".repeat(200_000)),
            ("whitespace-only lines", " \t \r\n".repeat(50_000)),
            ("objects on one line", "{}".repeat(100_000)),
            (
                "objects on one line, then junk",
                format!("{}x", "{} ".repeat(60_000)),
            ),
            (
                "lines starting with `{` where a key goes",
                "{\"a\":1,\n".repeat(30_000),
            ),
            ("nested objects at column 0", "{\"a\":\n".repeat(30_000)),
            (
                "closed nested objects at column 0",
                format!("{{\"a\":[\n{}", "{\"b\":1}\n".repeat(30_000)),
            ),
            (
                "truncated objects in a row, each before a whole one",
                "{\"a\":\n{\"a\":\n{\"b\":1}\n".repeat(20_000),
            ),
            ("unclosed strings", "{\"a\n".repeat(50_000)),
            ("deep nesting", format!("{{\"a\":{}", "[".repeat(200_000))),
        ];
        for (shape, input) in shapes {
            let work = work_per_byte(input.as_bytes());
            assert!(work <= MAX_WORK_PER_BYTE, "{shape}: {work} per byte");
            // Pushed a byte at a time, the work stays bounded too.
            let mut framer = Framer::new(1 << 20);
            for byte in input.as_bytes() {
                framer.push(std::slice::from_ref(byte), &mut |_| {});
            }
            framer.finish(&mut |_| {});
            let work = framer.bytes_scanned() as f64 / input.len() as f64;
            assert!(
                work <= MAX_WORK_PER_BYTE,
                "{shape}, byte by byte: {work} per byte"
            );
        }
    }

    #[test]
    fn oversized_object_followed_by_a_truncated_one_does_not_hide_the_next() {
        let input = format!(
            "{{\"x\":\"{}\"}}\n{{\"a\": [\n{{\"b\":1}}\n",
            "y".repeat(100)
        );
        assert_eq!(
            frames_of(&[input.as_bytes()], 50),
            [
                Owned::Oversized(1),
                Owned::Unterminated(2),
                message(3, "{\"b\":1}")
            ]
        );
    }
}
