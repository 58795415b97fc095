//! One session with the scheduler: the control stream's reader, writer
//! and heartbeat tasks, and the loop that queues assignments and reports
//! results.

use super::*;

/// Frames from the scheduler buffered ahead of the session loop.
pub(super) const INBOX_DEPTH: usize = 64;

/// Serves one session: runs what the scheduler assigns and reports back.
/// `Ok` when the scheduler said shut down, an error when the connection
/// was lost.
///
/// The control stream has one reader task and one writer task (frame reads
/// are not cancel-safe, so none sits in the `select!` below), and the
/// heartbeat is a task of its own that only takes short locks: nothing the
/// session loop waits on (a peer being dialled, a burst of results) can
/// delay a heartbeat.
pub(super) async fn session(
    config: &WorkerConfig,
    shared: &Arc<Shared>,
    writer: FrameWriter,
    reader: FrameReader,
    done_rx: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<()> {
    let current = shared.current_session();
    let lost = |e: String| WorkerError::SchedulerLost(e);
    let mut inbox = reader.into_channel::<ToWorker>(INBOX_DEPTH);
    let (outbox, mut writer_ended) = spawn_writer(writer);
    let beats = tokio::spawn(heartbeats(config.heartbeat, shared.clone(), outbox.clone()));
    let _stop_heartbeats = AbortOnDrop(beats);
    loop {
        tokio::select! {
            msg = inbox.recv() => match msg {
                Some(Ok(ToWorker::Run(assignments))) => {
                    for a in assignments {
                        if let Some(inputs) = local_inputs(shared, &a) {
                            // Everything is here: no fetch, straight to the queue.
                            shared.enqueue(ReadyTask { session: current, a, inputs });
                        } else {
                            let s = shared.clone();
                            tokio::spawn(async move { fetch_and_queue(s, current, a).await });
                        }
                    }
                }
                Some(Ok(ToWorker::Release(keys))) => {
                    if let Ok(mut outputs) = shared.outputs.lock() {
                        for k in keys {
                            outputs.remove(&k);
                        }
                    }
                }
                Some(Ok(ToWorker::Peers(peers))) => {
                    if let Ok(mut map) = shared.peers.lock() {
                        for p in peers {
                            map.insert(p.id, p);
                        }
                    }
                }
                Some(Ok(ToWorker::PeerGone(id))) => {
                    if let Ok(mut map) = shared.peers.lock() {
                        map.remove(&id);
                    }
                    if let Ok(mut conns) = shared.peer_conns.lock() {
                        conns.remove(&id);
                    }
                }
                Some(Ok(ToWorker::Shutdown)) => return Ok(()),
                None => return Err(lost("the scheduler closed the connection".into())),
                Some(Err(e)) => return Err(lost(e.to_string())),
            },
            Some(first) = done_rx.recv() => {
                let (mut started, mut computed, mut reports) = (Vec::new(), Vec::new(), Vec::new());
                let mut next = Some(first);
                while let Some(ev) = next {
                    match ev {
                        // Work of an earlier session: the scheduler gave it to others.
                        Event::Started(s, _) | Event::Computed(s, _) if s != current => {}
                        Event::Ended(c) if c.session != current => {}
                        Event::Started(_, key) => started.push(key),
                        Event::Computed(_, key) => computed.push(key),
                        Event::Ended(c) => {
                            if let Some(out) = c.keep
                                && let Ok(mut outputs) = shared.outputs.lock()
                            {
                                outputs.insert(c.key, out);
                            }
                            reports.push(TaskReport { key: c.key, outcome: c.outcome, stats: c.stats });
                        }
                    }
                    next = done_rx.try_recv().ok();
                }
                if !started.is_empty() && outbox.send(FromWorker::Started(started)).is_err() {
                    return Err(lost(writer_error(&mut writer_ended).await));
                }
                // A task's Computed may come in the batch after its Started,
                // never before: both pass through this one channel in order.
                if !computed.is_empty() && outbox.send(FromWorker::Computed(computed)).is_err() {
                    return Err(lost(writer_error(&mut writer_ended).await));
                }
                // The memory peak as of these tasks' ends, so the job's
                // report has it even when it finishes before the next beat.
                if !reports.is_empty()
                    && (outbox.send(FromWorker::Heartbeat(heartbeat(shared))).is_err()
                        || outbox.send(FromWorker::Finished(reports)).is_err())
                {
                    return Err(lost(writer_error(&mut writer_ended).await));
                }
            }
            ended = &mut writer_ended => {
                return Err(lost(ended.unwrap_or_else(|e| e.to_string())));
            }
        }
    }
}

/// Aborts a task when dropped (a session's heartbeat task, whichever way
/// the session ends).
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Moves the control stream's sending half into a task fed by a channel;
/// the task ends with the reason sending failed, or when every sender is
/// gone (then it finishes the stream).
pub(super) fn spawn_writer(
    mut writer: FrameWriter,
) -> (
    mpsc::UnboundedSender<FromWorker>,
    tokio::task::JoinHandle<String>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<FromWorker>();
    let task = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if let Err(e) = writer.send(&msg).await {
                return e.to_string();
            }
        }
        writer.finish();
        "the session ended".to_string()
    });
    (tx, task)
}

/// Why the writer task ended (it has, or is about to: its channel closed).
pub(super) async fn writer_error(ended: &mut tokio::task::JoinHandle<String>) -> String {
    ended.await.unwrap_or_else(|e| e.to_string())
}

/// Sends a heartbeat every `every` until the session's writer is gone.
pub(super) async fn heartbeats(
    every: Duration,
    shared: Arc<Shared>,
    outbox: mpsc::UnboundedSender<FromWorker>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if outbox
            .send(FromWorker::Heartbeat(heartbeat(&shared)))
            .is_err()
        {
            return;
        }
    }
}

/// This worker's memory and load now.
pub(super) fn heartbeat(shared: &Shared) -> Heartbeat {
    let running = shared.exec.lock().map(|e| e.running()).unwrap_or(0);
    let in_use = shared.in_use();
    Heartbeat {
        rss: shared.rss.load(Ordering::Relaxed),
        peak_rss: governor::peak_rss(),
        allocated: governor::allocated(),
        running: running as u32,
        paused: running > 0 && shared.governor.paused(in_use),
    }
}
