//! Splits the input byte stream into messages.
//!
//! Maelstrom sends one compact JSON object per line, and that is the fast
//! path: a complete line is handed on without being copied. People typing or
//! pasting requests send objects pretty-printed over several lines, with
//! `\r\n` endings and blank lines between them, so an object whose braces are
//! still open at the end of its first line is accumulated until they close.
//!
//! Framing never fails the stream. A line longer than the message limit is
//! followed to its end without being kept (so none of its lines is taken
//! for a message) and reported; an object that never closes is abandoned as
//! soon as a line at column 0 starts an object where the open one cannot
//! take a value (a new message, compact or pretty), so one bad message
//! cannot swallow the ones after it.

/// Default limit on one message's size, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Files saved by some Windows editors start with one; it is not JSON.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// What the framer found in the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One candidate message (not yet parsed), starting on input line `line`.
    Message { line: u64, bytes: &'a [u8] },
    /// A message starting on `line` exceeded the size limit and was skipped.
    Oversized { line: u64 },
    /// An object starting on `line` was still open when the next one began,
    /// or when the input ended; it was dropped.
    Unterminated { line: u64 },
}

/// Follows the structure of JSON text across the lines of a multi-line
/// object: which brackets are open, whether a string is, and what the last
/// token was, so a `{` inside a string does not count and a `{` at column 0
/// can be told apart (a nested value, or the next message).
#[derive(Debug, Default, Clone)]
pub(crate) struct Nesting {
    open: Vec<u8>,
    deepest: usize,
    in_string: bool,
    escaped: bool,
    /// The last byte outside strings that was not whitespace.
    last_token: u8,
}

impl Nesting {
    pub(crate) fn scan(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.open.push(byte);
                    self.deepest = self.deepest.max(self.open.len());
                }
                b'}' | b']' => {
                    self.open.pop();
                }
                _ => {}
            }
            if !byte.is_ascii_whitespace() {
                self.last_token = byte;
            }
        }
    }

    fn is_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// Whether JSON allows a value next: after `:`, `[`, or `,` in an array.
    fn expects_value(&self) -> bool {
        match self.last_token {
            b':' | b'[' => true,
            b',' => self.open.last() == Some(&b'['),
            _ => false,
        }
    }

    /// The deepest nesting seen.
    pub(crate) fn deepest(&self) -> usize {
        self.deepest
    }
}

/// A multi-line object being gathered.
#[derive(Debug)]
struct Gathering {
    first_line: u64,
    nesting: Nesting,
    /// Past the size limit: its bytes are no longer kept, only followed to
    /// its end (so none of its lines is mistaken for a message), and it is
    /// reported as oversized.
    oversized: bool,
}

impl Gathering {
    /// How the object ends when it is given up on.
    fn dropped(&self) -> Frame<'static> {
        if self.oversized {
            Frame::Oversized {
                line: self.first_line,
            }
        } else {
            Frame::Unterminated {
                line: self.first_line,
            }
        }
    }
}

/// Incremental splitter: feed it chunks as they arrive.
#[derive(Debug)]
pub struct Framer {
    max_message_bytes: usize,
    /// Bytes of a multi-line object so far, then of the incomplete line.
    pending: Vec<u8>,
    /// Where the incomplete line in `pending` starts.
    pending_line_start: usize,
    gathering: Option<Gathering>,
    /// Skipping the rest of an oversized line up to its newline.
    skipping_line: bool,
    /// Number of the next line to complete (1-based).
    line_no: u64,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

impl Framer {
    pub fn new(max_message_bytes: usize) -> Self {
        Framer {
            max_message_bytes,
            pending: Vec::new(),
            pending_line_start: 0,
            gathering: None,
            skipping_line: false,
            line_no: 1,
        }
    }

    /// Feeds one chunk of input, calling `on_frame` for each frame it completes.
    pub fn push(&mut self, mut chunk: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) {
        while !chunk.is_empty() {
            let Some(newline) = memchr::memchr(b'\n', chunk) else {
                self.buffer_partial_line(chunk, on_frame);
                return;
            };
            let (line, rest) = (&chunk[..newline], &chunk[newline + 1..]);
            chunk = rest;
            if self.skipping_line {
                self.skipping_line = false;
                self.line_no += 1;
                self.follow_oversized(line, on_frame);
                continue;
            }
            if self.pending.len() == self.pending_line_start && self.gathering.is_none() {
                // Nothing buffered for this line: hand it on without copying
                // (the common case for compact one-line messages).
                let line_no = self.line_no;
                self.line_no += 1;
                self.complete_line(line, line_no, on_frame);
                continue;
            }
            self.pending.extend_from_slice(line);
            self.finish_buffered_line(on_frame);
        }
    }

    /// Signals the end of input: a last line without newline is still a line.
    pub fn finish(&mut self, on_frame: &mut impl FnMut(Frame<'_>)) {
        if self.pending.len() > self.pending_line_start && !self.skipping_line {
            self.finish_buffered_line(on_frame);
        }
        if let Some(gathering) = self.gathering.take() {
            on_frame(gathering.dropped());
        }
        self.pending.clear();
        self.pending_line_start = 0;
        self.skipping_line = false;
    }

    fn buffer_partial_line(&mut self, chunk: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) {
        if self.skipping_line {
            if let Some(gathering) = &mut self.gathering {
                gathering.nesting.scan(chunk);
            }
            return;
        }
        self.pending.extend_from_slice(chunk);
        let line = &self.pending[self.pending_line_start..];
        // A line at column 0 opening an object may be the next message
        // rather than part of the open one: until it is complete, it is
        // measured on its own.
        let may_start_a_message = self.gathering.is_some() && line.first() == Some(&b'{');
        let measured = if may_start_a_message {
            line
        } else {
            &self.pending[..]
        };
        if !self.over_limit(measured) {
            return;
        }
        // Too long already: follow the rest without keeping it.
        let line = trim_line(line).to_vec();
        if may_start_a_message && self.next_message_starts_here(&line) {
            let gathering = self.gathering.take().expect("gathering");
            on_frame(gathering.dropped());
        }
        self.pending.clear();
        self.pending_line_start = 0;
        self.skipping_line = true;
        self.start_oversized(&line, self.line_no, on_frame);
    }

    /// Whether `line`, at column 0 while an object is open, starts the next
    /// message: where the open object cannot take a value, or as a whole
    /// one-line object within the limit (an oversized line is judged by the
    /// first rule alone, as it is before it has fully arrived).
    fn next_message_starts_here(&self, line: &[u8]) -> bool {
        let gathering = self.gathering.as_ref().expect("gathering");
        !gathering.nesting.expects_value() || (looks_complete(line) && !self.over_limit(line))
    }

    fn over_limit(&self, raw: &[u8]) -> bool {
        over_limit(self.max_message_bytes, raw)
    }

    /// `line` (the start of one, or a whole one) is over the size limit.
    /// If it is inside or opens a multi-line object, that object is followed
    /// to its end as oversized; otherwise the line is reported at once.
    fn start_oversized(&mut self, line: &[u8], line_no: u64, on_frame: &mut impl FnMut(Frame<'_>)) {
        match &mut self.gathering {
            Some(gathering) => {
                gathering.nesting.scan(line);
                gathering.oversized = true;
            }
            None if line.first() == Some(&b'{') => {
                let mut nesting = Nesting::default();
                nesting.scan(line);
                self.gathering = Some(Gathering {
                    first_line: line_no,
                    nesting,
                    oversized: true,
                });
            }
            None => on_frame(Frame::Oversized { line: line_no }),
        }
        if !self.skipping_line {
            self.end_oversized_if_closed(on_frame);
        }
    }

    /// The rest of an oversized line arrived.
    fn follow_oversized(&mut self, rest: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) {
        if let Some(gathering) = &mut self.gathering {
            gathering.nesting.scan(rest);
        }
        self.end_oversized_if_closed(on_frame);
    }

    fn end_oversized_if_closed(&mut self, on_frame: &mut impl FnMut(Frame<'_>)) {
        if let Some(gathering) = &self.gathering
            && gathering.oversized
            && !gathering.nesting.is_open()
        {
            on_frame(gathering.dropped());
            self.gathering = None;
        }
    }

    /// The line at `pending[pending_line_start..]` is complete.
    fn finish_buffered_line(&mut self, on_frame: &mut impl FnMut(Frame<'_>)) {
        let line_no = self.line_no;
        self.line_no += 1;
        let mut pending = std::mem::take(&mut self.pending);
        let start = self.pending_line_start;
        if self.gathering.is_some() {
            self.continue_gathering(&mut pending, start, line_no, on_frame);
            self.pending_line_start = pending.len();
            self.pending = pending;
            return;
        }
        self.complete_line(&pending[start..], line_no, on_frame);
        if self.gathering.is_none() || self.gathering.as_ref().is_some_and(|g| g.oversized) {
            // Keep the allocation for the next partial line.
            pending.clear();
            self.pending_line_start = 0;
            self.pending = pending;
        }
    }

    /// A whole line that is not part of a multi-line object.
    fn complete_line(&mut self, raw: &[u8], line_no: u64, on_frame: &mut impl FnMut(Frame<'_>)) {
        let line = trim_line(raw);
        let line = line.strip_prefix(BYTE_ORDER_MARK).unwrap_or(line);
        if line.is_empty() {
            return;
        }
        if self.over_limit(raw) {
            self.start_oversized(line, line_no, on_frame);
            return;
        }
        if line[0] == b'{' && !looks_complete(line) {
            let mut nesting = Nesting::default();
            nesting.scan(line);
            if nesting.is_open() {
                self.pending.clear();
                self.pending.extend_from_slice(line);
                self.pending.push(b'\n');
                self.pending_line_start = self.pending.len();
                self.gathering = Some(Gathering {
                    first_line: line_no,
                    nesting,
                    oversized: false,
                });
                return;
            }
        }
        on_frame(Frame::Message {
            line: line_no,
            bytes: line,
        });
    }

    /// One more line of a multi-line object, at `pending[start..]`.
    fn continue_gathering(
        &mut self,
        pending: &mut Vec<u8>,
        start: usize,
        line_no: u64,
        on_frame: &mut impl FnMut(Frame<'_>),
    ) {
        let next_message = pending.get(start) == Some(&b'{')
            && self.next_message_starts_here(trim_line(&pending[start..]));
        let gathering = self.gathering.as_mut().expect("gathering");
        let line = trim_line(&pending[start..]);
        if next_message {
            // An object at column 0 where the open one cannot take a value
            // (or a whole one-line object) is the next message: the open
            // one will never close. A `{` where a value may go is nested.
            on_frame(gathering.dropped());
            self.gathering = None;
            let line = pending[start..].to_vec();
            pending.clear();
            self.complete_line(&line, line_no, on_frame);
            if self.gathering.as_ref().is_some_and(|g| !g.oversized) {
                // It opened a multi-line object of its own.
                *pending = std::mem::take(&mut self.pending);
            }
            return;
        }
        gathering.nesting.scan(line);
        if !gathering.oversized && over_limit(self.max_message_bytes, pending) {
            gathering.oversized = true;
        }
        if gathering.oversized {
            pending.clear();
            self.end_oversized_if_closed(on_frame);
            return;
        }
        if gathering.nesting.is_open() {
            pending.push(b'\n');
            return;
        }
        let first_line = gathering.first_line;
        self.gathering = None;
        on_frame(Frame::Message {
            line: first_line,
            bytes: pending,
        });
        pending.clear();
    }
}

/// A cheap test that passes for every compact one-line object: it closes
/// with `}` and its braces balance. Only lines that fail it are scanned
/// byte by byte (with string awareness) to see whether the object goes on.
fn looks_complete(line: &[u8]) -> bool {
    // Summed in i8 over chunks short enough not to overflow, which the
    // compiler turns into 16 bytes per instruction; this runs on every line.
    let balance: isize = line
        .chunks(i8::MAX as usize)
        .map(|chunk| {
            let sum = chunk.iter().fold(0i8, |sum, &byte| {
                sum + i8::from(byte == b'{') - i8::from(byte == b'}')
            });
            isize::from(sum)
        })
        .sum();
    line.last() == Some(&b'}') && balance == 0
}

/// Whitespace around a message that does not count towards its size, up
/// to this much (beyond it, whitespace alone could grow a line unbounded).
const WHITESPACE_ALLOWANCE: usize = 4096;

/// Whether a message (or the start of one) is over `limit`: its content,
/// without surrounding whitespace and byte order mark, is; or its raw bytes
/// pass the limit by more than [`WHITESPACE_ALLOWANCE`]. Both only grow as
/// more of a line arrives, so the verdict does not depend on where a read
/// happened to end.
fn over_limit(limit: usize, raw: &[u8]) -> bool {
    let content = trim_line(raw);
    let content = content.strip_prefix(BYTE_ORDER_MARK).unwrap_or(content);
    content.len() > limit || raw.len() > limit.saturating_add(WHITESPACE_ALLOWANCE)
}

/// How deeply `json` nests, strings taken into account.
pub(crate) fn nesting_depth(json: &[u8]) -> usize {
    let mut nesting = Nesting::default();
    nesting.scan(json);
    nesting.deepest()
}

/// Strips surrounding whitespace, including a `\r` before the newline.
fn trim_line(line: &[u8]) -> &[u8] {
    line.trim_ascii()
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
}
