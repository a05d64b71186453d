//! `GET /events`: the status snapshot as Server-Sent Events, once a
//! second, for as long as someone reads them.
//!
//! Each stream is a task that takes a snapshot on every tick and hands it
//! to the connection through a channel that holds one frame. The task ends
//! as soon as its reader is gone (hyper drops the body when the connection
//! closes, which closes the channel), when grace stops (so a graceful
//! shutdown never waits on an open stream), or when the engine can no
//! longer answer: a closed tab costs the server nothing. A reader that
//! stops reading leaves one frame waiting and the task waiting on it, so
//! nothing piles up either.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

/// How often a stream sends a snapshot.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(1);
/// Streams open at once; one more is refused with `503` (each asks the
/// engine for a snapshot every second).
pub const MAX_EVENT_STREAMS: usize = 32;
/// The first frame: how long an `EventSource` that lost its stream waits
/// before it connects again, in milliseconds.
const RETRY_FRAME: &[u8] = b"retry: 1000\n\n";

/// The body of a `GET /events` answer: the frames its task sends, until
/// the task ends.
#[derive(Debug)]
pub struct EventStream {
    frames: mpsc::Receiver<Bytes>,
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.frames
            .poll_recv(cx)
            .map(|frame| frame.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// How many streams are open now; shared by the admin listener's tasks.
#[derive(Debug, Clone, Default)]
pub struct LiveStreams {
    count: Arc<AtomicUsize>,
}

/// One open stream's place in [`LiveStreams`], given back when dropped
/// (whichever way its task ends).
#[derive(Debug)]
pub struct StreamSlot {
    count: Arc<AtomicUsize>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LiveStreams {
    /// Streams open now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// A place for one more stream, unless [`MAX_EVENT_STREAMS`] are open.
    pub fn try_open(&self) -> Option<StreamSlot> {
        self.count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < MAX_EVENT_STREAMS).then_some(open + 1)
            })
            .ok()
            .map(|_| StreamSlot {
                count: Arc::clone(&self.count),
            })
    }
}

/// Starts a stream holding `slot`: every [`EVENT_INTERVAL`], from now on,
/// the snapshot `snapshot` gives (JSON text on one line) as one event,
/// until the reader goes, `stop` turns true, or `snapshot` gives `None`.
pub fn open<S, F>(mut snapshot: S, slot: StreamSlot, mut stop: watch::Receiver<bool>) -> EventStream
where
    S: FnMut() -> F + Send + 'static,
    F: Future<Output = Option<String>> + Send,
{
    let (sender, frames) = mpsc::channel(1);
    tokio::spawn(async move {
        let _slot = slot;
        let mut ticks = tokio::time::interval(EVENT_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_frame = Some(Bytes::from_static(RETRY_FRAME));
        loop {
            if let Some(frame) = next_frame.take() {
                tokio::select! {
                    sent = sender.send(frame) => if sent.is_err() { return },
                    _ = stop.wait_for(|stopping| *stopping) => return,
                }
            }
            tokio::select! {
                _ = ticks.tick() => {}
                () = sender.closed() => return,
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
            let taken = tokio::select! {
                taken = snapshot() => taken,
                () = sender.closed() => return,
                _ = stop.wait_for(|stopping| *stopping) => return,
            };
            let Some(json) = taken else { return };
            next_frame = Some(event(&json));
        }
    });
    EventStream { frames }
}

/// One Server-Sent Event carrying `json` (which holds no line break).
fn event(json: &str) -> Bytes {
    debug_assert!(!json.contains('\n'), "an event's data is one line");
    let mut frame = Vec::with_capacity(json.len() + 8);
    frame.extend_from_slice(b"data: ");
    frame.extend_from_slice(json.as_bytes());
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicU64;

    fn counting_snapshots(
        taken: &Arc<AtomicU64>,
    ) -> impl FnMut() -> std::future::Ready<Option<String>> + Send + 'static {
        let taken = Arc::clone(taken);
        move || {
            let n = taken.fetch_add(1, Ordering::Relaxed) + 1;
            std::future::ready(Some(format!("{{\"snapshot\":{n}}}")))
        }
    }

    async fn next_text(stream: &mut EventStream) -> Option<String> {
        let frame = stream.frame().await?.expect("infallible");
        Some(String::from_utf8(frame.into_data().expect("a data frame").to_vec()).expect("utf-8"))
    }

    #[tokio::test(start_paused = true)]
    async fn stream_sends_retry_then_one_snapshot_per_interval() {
        let streams = LiveStreams::default();
        let (_stop_tx, stop) = watch::channel(false);
        let taken = Arc::new(AtomicU64::new(0));
        let mut stream = open(
            counting_snapshots(&taken),
            streams.try_open().unwrap(),
            stop,
        );
        assert_eq!(next_text(&mut stream).await.unwrap(), "retry: 1000\n\n");
        let started = tokio::time::Instant::now();
        assert_eq!(
            next_text(&mut stream).await.unwrap(),
            "data: {\"snapshot\":1}\n\n"
        );
        assert_eq!(
            next_text(&mut stream).await.unwrap(),
            "data: {\"snapshot\":2}\n\n"
        );
        assert_eq!(
            next_text(&mut stream).await.unwrap(),
            "data: {\"snapshot\":3}\n\n"
        );
        // The first at once, then one per interval.
        assert_eq!(started.elapsed(), 2 * EVENT_INTERVAL);
        assert_eq!(streams.count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_reader_ends_the_task_and_frees_its_slot_without_another_snapshot() {
        let streams = LiveStreams::default();
        let (_stop_tx, stop) = watch::channel(false);
        let taken = Arc::new(AtomicU64::new(0));
        let mut stream = open(
            counting_snapshots(&taken),
            streams.try_open().unwrap(),
            stop,
        );
        next_text(&mut stream).await;
        next_text(&mut stream).await;
        assert_eq!(taken.load(Ordering::Relaxed), 1);
        drop(stream);
        // The task wakes on the closed channel, not on its next tick.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(streams.count(), 0, "the stream's task still runs");
        tokio::time::sleep(10 * EVENT_INTERVAL).await;
        assert_eq!(
            taken.load(Ordering::Relaxed),
            1,
            "snapshots taken for nobody"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_body_so_a_graceful_shutdown_can_finish() {
        let streams = LiveStreams::default();
        let (stop_tx, stop) = watch::channel(false);
        let taken = Arc::new(AtomicU64::new(0));
        let mut stream = open(
            counting_snapshots(&taken),
            streams.try_open().unwrap(),
            stop,
        );
        next_text(&mut stream).await;
        next_text(&mut stream).await;
        stop_tx.send(true).unwrap();
        assert_eq!(
            next_text(&mut stream).await,
            None,
            "the body goes on after stop"
        );
        assert_eq!(streams.count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_reading_holds_one_frame_and_no_more_snapshots() {
        let streams = LiveStreams::default();
        let (_stop_tx, stop) = watch::channel(false);
        let taken = Arc::new(AtomicU64::new(0));
        let mut stream = open(
            counting_snapshots(&taken),
            streams.try_open().unwrap(),
            stop,
        );
        next_text(&mut stream).await;
        tokio::time::sleep(60 * EVENT_INTERVAL).await;
        // One snapshot waits in the channel, one in the task: none after.
        assert!(
            taken.load(Ordering::Relaxed) <= 2,
            "{taken:?} snapshots taken"
        );
        assert_eq!(
            next_text(&mut stream).await.unwrap(),
            "data: {\"snapshot\":1}\n\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn engine_gone_ends_the_stream() {
        let streams = LiveStreams::default();
        let (_stop_tx, stop) = watch::channel(false);
        let mut stream = open(
            || std::future::ready(None),
            streams.try_open().unwrap(),
            stop,
        );
        assert_eq!(next_text(&mut stream).await.unwrap(), "retry: 1000\n\n");
        assert_eq!(next_text(&mut stream).await, None);
        assert_eq!(streams.count(), 0);
    }

    #[test]
    fn streams_beyond_the_limit_are_refused_until_one_closes() {
        let streams = LiveStreams::default();
        let slots: Vec<StreamSlot> = (0..MAX_EVENT_STREAMS)
            .map(|_| streams.try_open().expect("a slot under the limit"))
            .collect();
        assert!(streams.try_open().is_none());
        assert_eq!(streams.count(), MAX_EVENT_STREAMS);
        drop(slots.into_iter().next());
        assert!(streams.try_open().is_some());
    }
}
