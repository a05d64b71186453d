//! Diagnostics on stderr, written in blocks.
//!
//! grace logs every breaker transition and mode change (an operator wants
//! them all), and a flood of requests can make tens of thousands of them a
//! second. Written line by line that is one `write(2)` each, more system
//! calls than all the replies on stdout. So log lines are gathered here and
//! written when the runtime writes its replies (whenever no more input is
//! waiting), when 64 KiB have gathered, and at exit. A closed stderr drops
//! the lines; it never stops the node.

use std::io::{self, Write};
use std::sync::Mutex;

/// Log bytes gathered before they are written anyway.
const FLUSH_THRESHOLD_BYTES: usize = 64 * 1024;

static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// A `tracing` writer that appends to the pending block.
pub struct BufferedStderr;

impl Write for BufferedStderr {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut pending = PENDING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pending.extend_from_slice(bytes);
        if pending.len() >= FLUSH_THRESHOLD_BYTES {
            write_out(&mut pending);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes every gathered log line to stderr now.
pub fn flush() {
    let mut pending = PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    write_out(&mut pending);
}

fn write_out(pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        // A closed or broken stderr loses the lines, nothing more.
        let _ = io::stderr().write_all(pending);
        pending.clear();
    }
}
