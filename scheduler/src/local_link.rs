//! A client's link to a scheduler running in the same process: its
//! messages go straight into the scheduler's event loop and its replies
//! come back over a channel, with no network, encryption or encoding on
//! the way (a local cluster's own run spent about a third of the
//! coordinating process' CPU on a QUIC connection to itself).
//!
//! Only code holding the [`crate::SchedulerHandle`] can open one, so no
//! secret is checked: the process that started the scheduler is trusted
//! with it already.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anncat_exec::protocol::{ClientId, ToClient, ToScheduler};
use tokio::sync::mpsc;

use crate::error::{Result, SchedulerError};
use crate::server::Event;

/// The way into a running scheduler's event loop, kept by its handle.
#[derive(Clone)]
pub(crate) struct Inlet {
    pub(crate) events: mpsc::Sender<Event>,
    /// Shared with the network side: client ids never repeat.
    pub(crate) next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Inlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inlet")
    }
}

impl Inlet {
    /// Registers a new in-process client. Must not be called from inside
    /// an async runtime (it waits for room in the event queue).
    pub(crate) fn open(&self) -> Result<LocalLink> {
        let id = ClientId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::unbounded_channel::<ToClient>();
        self.events
            .blocking_send(Event::ClientJoined(id, tx))
            .map_err(|_| stopped())?;
        Ok(LocalLink {
            sender: LocalSender {
                events: self.events.clone(),
                id,
            },
            replies: rx,
        })
    }
}

/// Sends a client's messages into the event loop.
#[derive(Clone)]
pub(crate) struct LocalSender {
    events: mpsc::Sender<Event>,
    id: ClientId,
}

impl LocalSender {
    /// Hands `msg` to the scheduler.
    pub(crate) async fn send(&self, msg: ToScheduler) -> Result<()> {
        self.events
            .send(Event::FromClient(self.id, msg))
            .await
            .map_err(|_| stopped())
    }
}

/// An in-process client's two directions.
pub(crate) struct LocalLink {
    sender: LocalSender,
    replies: mpsc::UnboundedReceiver<ToClient>,
}

impl LocalLink {
    /// The sending half (the client's, and its cancellers').
    pub(crate) fn sender(&self) -> LocalSender {
        self.sender.clone()
    }

    /// The scheduler's next message; `None` once it stopped.
    pub(crate) async fn next(&mut self) -> Option<ToClient> {
        self.replies.recv().await
    }
}

impl Drop for LocalLink {
    /// Leaves the scheduler at once, as a closed connection would.
    fn drop(&mut self) {
        let lost = Event::ClientLost(self.sender.id);
        if let Err(mpsc::error::TrySendError::Full(lost)) = self.sender.events.try_send(lost) {
            // The queue is full: wait for room off this thread, which may
            // be inside a runtime.
            let events = self.sender.events.clone();
            let _ = std::thread::Builder::new()
                .name("anncat-client-leave".into())
                .spawn(move || events.blocking_send(lost));
        }
    }
}

fn stopped() -> SchedulerError {
    SchedulerError::Lost("the scheduler stopped".into())
}
