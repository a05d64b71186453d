//! A server process under test (`grace serve`, `grace demo-upstream`): its
//! stdout read line by line and its stderr collected by threads, so a test
//! can wait for a line with a timeout and show what the process said when
//! something does not come. A test that fails half-way never leaves it
//! running.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Collects everything `pipe` gives, on a thread of its own, until it
/// closes: the bytes so far, and the thread.
pub fn collect(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&bytes);
    let reader = thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(read) => collected.lock().unwrap().extend_from_slice(&buffer[..read]),
            }
        }
    });
    (bytes, reader)
}

/// A process that has exited.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    /// The stdout lines not yet read (after the start-up line, if any).
    pub stdout_lines: Vec<String>,
    pub stderr: String,
}

/// The child, with its stdout and stderr piped into the test.
pub struct ServerProcess {
    /// What it is, for failure messages (`"grace serve"`).
    what: &'static str,
    pub child: Child,
    pub stdout_lines: Receiver<String>,
    readers: Vec<JoinHandle<()>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl ServerProcess {
    /// Spawns `command`, whose stdout and stderr must be piped.
    pub fn start(what: &'static str, mut command: Command) -> ServerProcess {
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {what}: {err}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let (sender, stdout_lines) = mpsc::channel();
        let stdout_reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let (stderr, stderr_reader) = collect(child.stderr.take().expect("stderr piped"));
        ServerProcess {
            what,
            child,
            stdout_lines,
            readers: vec![stdout_reader, stderr_reader],
            stderr,
        }
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits for it to exit on its own, for at most `timeout` (then kills
    /// it and fails the test).
    pub fn wait(mut self, timeout: Duration) -> Exited {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {timeout:?}; stderr:\n{}",
                    self.what,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
        Exited {
            status,
            stdout_lines: self.stdout_lines.try_iter().collect(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
