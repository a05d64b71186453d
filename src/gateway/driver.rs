//! Runs the [`Engine`]'s steps where their events happen, and makes the
//! HTTP calls the steps start.
//!
//! The engine sits behind a lock that each step holds for microseconds and
//! never across an await. A client's task steps its own request, a call's
//! task steps its completion, the timer's task steps the deadlines, the
//! admin listener steps an operator's request: no event waits in a channel
//! for a task of the engine's own to be scheduled.
//!
//! A fresh request is the hot path, so its call is made in the client's
//! own task: the request is stepped in, the call goes out and comes back,
//! its completion is stepped in, and the answer is already there. If the
//! client goes away first, the call does not go with it: other requests
//! may be waiting for it (coalesced reads), so it is handed to a task of
//! its own and completed there ([`CallInClientTask`]). Every other call
//! (a queue's delivery, a write let through after the one before it) gets
//! a task of its own at once.

use super::commits::Commits;
use super::engine::{Answer, Calls, Engine, Event, Incoming, Step};
use super::upstream::{CallEnd, HttpJob};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{Notify, oneshot, watch};

/// The engine has finished (grace is stopping) or failed: nothing more is
/// handled.
#[derive(Debug, Clone, Copy)]
pub struct Stopped;

/// The engine, shared by every task that has an event for it.
pub struct Driver {
    /// `None` once finished.
    engine: Mutex<Option<Engine>>,
    /// Told when a step brings the next deadline forward.
    deadline_moved: Notify,
}

impl Driver {
    pub fn new(engine: Engine) -> Arc<Self> {
        Arc::new(Driver {
            engine: Mutex::new(Some(engine)),
            deadline_moved: Notify::new(),
        })
    }

    /// Steps `event` in now, waking the timer if it must.
    fn step(&self, event: Event) -> Result<Calls, Stopped> {
        let Step { calls, wake_timer } =
            self.inspect(|engine| engine.step(event, Instant::now()))?;
        if wake_timer {
            self.deadline_moved.notify_one();
        }
        Ok(calls)
    }

    /// Steps `event` in; the calls it starts get tasks of their own.
    pub fn send(self: &Arc<Self>, event: Event) -> Result<(), Stopped> {
        for call in self.step(event)? {
            self.spawn(call);
        }
        Ok(())
    }

    /// Runs `look` on the engine, unless it finished (for a step, and for
    /// the admin listener's views). A step that panicked leaves the lock
    /// poisoned and the engine's state half changed: that counts as stopped.
    pub fn inspect<T>(&self, look: impl FnOnce(&mut Engine) -> T) -> Result<T, Stopped> {
        let mut guard = self.engine.lock().map_err(|_| Stopped)?;
        Ok(look(guard.as_mut().ok_or(Stopped)?))
    }

    /// Passes a client's request on and waits for its answer, making the
    /// request's own call in this task.
    pub async fn request(
        self: &Arc<Self>,
        incoming: impl FnOnce(oneshot::Sender<Answer>) -> Incoming,
    ) -> Answer {
        let (reply, answer) = oneshot::channel();
        let calls = match self.step(Event::Request(Box::new(incoming(reply)))) {
            Ok(calls) => calls,
            Err(Stopped) => return stopping(),
        };
        let mut own = None;
        for call in calls {
            if own.is_none() && call.is_for_its_client() {
                own = Some(call);
            } else {
                self.spawn(call);
            }
        }
        // The call ends by its deadline, when the core answers without it:
        // the answer is not waited for meanwhile, so that it comes with no
        // wake-up of its own when the call's completion settles it.
        if let Some(call) = own {
            CallInClientTask::new(Arc::clone(self).make(call)).await;
        }
        answer.await.unwrap_or_else(|_| stopping())
    }

    fn spawn(self: &Arc<Self>, call: HttpJob) {
        tokio::spawn(Arc::clone(self).make(call));
    }

    /// Makes `call` and steps its end in.
    async fn make(self: Arc<Self>, call: HttpJob) {
        let CallEnd {
            id,
            service,
            took,
            result,
            learned,
        } = call.run().await;
        if let Some((route, names)) = learned {
            let _ = self.send(Event::LearnVary { route, names });
        }
        let _ = self.send(match result {
            Some(result) => Event::Completed {
                id,
                result,
                service,
                took,
            },
            None => Event::TimedOut { service, took },
        });
    }

    /// Steps the core's deadlines in as they come, until `stop`.
    pub async fn keep_time(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let Ok(deadline) = self.inspect(Engine::arm_timer) else {
                return;
            };
            let sleep = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return,
                () = self.deadline_moved.notified() => {}
                () = sleep => {
                    if self.send(Event::Timeout).is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Ends the engine: what the core still holds is committed and the
    /// journal closed. Requests still waiting are told grace is stopping.
    pub async fn finish(&self) {
        let engine = match self.engine.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(commits) = engine.and_then(Engine::finish) {
            let _ = tokio::task::spawn_blocking(move || Commits::close(commits)).await;
        }
    }
}

fn stopping() -> Answer {
    Answer::Stopped("grace is stopping".into())
}

/// A call made in its client's task. If the client's task drops it before
/// it ends (the client went away), it goes on in a task of its own: other
/// requests may be waiting for its answer.
struct CallInClientTask {
    call: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl CallInClientTask {
    fn new(call: impl Future<Output = ()> + Send + 'static) -> Self {
        CallInClientTask {
            call: Some(Box::pin(call)),
        }
    }
}

impl Future for CallInClientTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(call) = self.call.as_mut() else {
            return Poll::Ready(());
        };
        let polled = call.as_mut().poll(cx);
        if polled.is_ready() {
            self.call = None;
        }
        polled
    }
}

impl Drop for CallInClientTask {
    fn drop(&mut self) {
        if let Some(call) = self.call.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(call);
        }
    }
}
