//! The journal's own thread: commits the queue's rows, then lets the
//! answers that promised them go.
//!
//! A commit is an fsync, milliseconds on a disk, and the engine must not
//! stall on it: jobs queue up here while one commits, and every job waiting
//! is folded into the next commit (group commit). Jobs are done in the
//! order they came, so no answer gets ahead of a commit made before it. If
//! a commit fails, grace cannot keep its promises: the answers waiting are
//! told so, and the gateway stops.

use crate::core::queue::StoredWrite;
use crate::core::queue::journal::SqliteJournal;
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::sync::{oneshot, watch};

/// Why an answer waiting for a commit is not the one it was to be: the
/// answer type says so in its own terms (`From`).
pub struct NotCommitted(pub String);

/// Rows to commit, and the answers `A` to send once they are.
pub struct CommitJob<A> {
    pub rows: Vec<StoredWrite>,
    pub replies: Vec<(oneshot::Sender<A>, A)>,
}

/// The handle the engine submits jobs through.
pub struct Commits<A> {
    jobs: mpsc::Sender<CommitJob<A>>,
    thread: JoinHandle<()>,
}

impl<A: From<NotCommitted> + Send + 'static> Commits<A> {
    /// Starts the thread over `journal`; `failed` is set if a commit fails.
    pub fn start(mut journal: SqliteJournal, failed: watch::Sender<Option<String>>) -> Self {
        let (jobs, receiver) = mpsc::channel::<CommitJob<A>>();
        let thread = std::thread::Builder::new()
            .name("grace-journal".into())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let mut rows = first.rows;
                    let mut replies = first.replies;
                    // Everything waiting goes into this one commit.
                    while let Ok(next) = receiver.try_recv() {
                        rows.extend(next.rows);
                        replies.extend(next.replies);
                    }
                    match journal.commit(&rows) {
                        Ok(()) => {
                            for (reply, answer) in replies {
                                let _ = reply.send(answer);
                            }
                        }
                        Err(err) => {
                            tracing::error!("journal commit failed, stopping: {err}");
                            for (reply, _) in replies {
                                let _ = reply.send(
                                    NotCommitted(format!("journal commit failed: {err}")).into(),
                                );
                            }
                            let _ = failed.send(Some(err.to_string()));
                            // Nothing more can be promised: refuse the rest.
                            while let Ok(job) = receiver.recv() {
                                for (reply, _) in job.replies {
                                    let _ = reply
                                        .send(NotCommitted("the journal failed".into()).into());
                                }
                            }
                            return;
                        }
                    }
                }
            })
            .expect("spawn the journal thread");
        Commits { jobs, thread }
    }

    pub fn submit(&self, job: CommitJob<A>) {
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            for (reply, _) in job.replies {
                let _ = reply.send(NotCommitted("the journal is closed".into()).into());
            }
        }
    }

    /// Commits what is waiting and ends the thread.
    pub fn close(self) {
        drop(self.jobs);
        let _ = self.thread.join();
    }
}
