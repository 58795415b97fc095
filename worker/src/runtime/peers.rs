//! Outputs between workers: fetching a task's inputs from the peers that
//! hold them (one connection per peer, one stream per fetch) and serving
//! this worker's outputs to peers.

use super::*;

/// The inputs of `a` when every one is held by this worker.
pub(super) fn local_inputs(shared: &Shared, a: &Assignment) -> Option<Vec<Arc<Vec<u8>>>> {
    let me = shared.me()?;
    if a.inputs.iter().any(|i| i.holder != me) {
        return None;
    }
    let outputs = shared.outputs.lock().ok()?;
    a.inputs
        .iter()
        .map(|i| outputs.get(&i.key).cloned())
        .collect()
}

pub(super) async fn fetch_and_queue(shared: Arc<Shared>, session: u64, a: Assignment) {
    let mut inputs = Vec::with_capacity(a.inputs.len());
    for input in &a.inputs {
        match fetch(&shared, input.key, input.holder).await {
            Ok(data) => inputs.push(data),
            Err(message) => {
                let _ = shared.done_tx.send(Event::Ended(Completion {
                    session,
                    key: a.key,
                    keep: None,
                    outcome: TaskOutcome::Failed {
                        kind: FailureKind::InputLost,
                        message,
                    },
                    stats: TaskStats::default(),
                }));
                return;
            }
        }
    }
    shared.enqueue(ReadyTask { session, a, inputs });
}

pub(super) async fn fetch(
    shared: &Arc<Shared>,
    key: TaskKey,
    holder: WorkerId,
) -> std::result::Result<Arc<Vec<u8>>, String> {
    if shared.me() == Some(holder) {
        return shared
            .outputs
            .lock()
            .ok()
            .and_then(|o| o.get(&key).cloned())
            .ok_or_else(|| format!("output of {key} is not on this worker"));
    }
    let peer = peer_conn(shared, holder).await?;
    let reply = async {
        let (send, recv) = peer
            .conn
            .open_bi()
            .await
            .map_err(|e| NetError::Closed(e.to_string()))?;
        let (mut w, mut r) = (
            FrameWriter::new(send),
            FrameReader::new(recv, peer.max_reply),
        );
        w.send(&PeerRequest::Fetch(key)).await?;
        w.finish();
        r.next::<PeerReply>().await
    }
    .await;
    match reply {
        Ok(Some(PeerReply::Data(bytes))) => Ok(Arc::new(bytes)),
        Ok(Some(PeerReply::Missing)) => Err(format!("worker {holder} no longer holds {key}")),
        Ok(None) | Err(_) => {
            if let Ok(mut conns) = shared.peer_conns.lock() {
                conns.remove(&holder);
            }
            Err(format!(
                "lost the connection to worker {holder} fetching {key}"
            ))
        }
    }
}

pub(super) async fn peer_conn(
    shared: &Arc<Shared>,
    holder: WorkerId,
) -> std::result::Result<Arc<PeerConn>, String> {
    // The map is never locked across an await: dialling a peer that died
    // takes seconds, and nothing else may wait for that. (Two fetches may
    // both dial a new peer; the second connection is dropped.)
    if let Some(c) = shared
        .peer_conns
        .lock()
        .ok()
        .and_then(|conns| conns.get(&holder).cloned())
    {
        return Ok(c);
    }
    let info = shared
        .peers
        .lock()
        .ok()
        .and_then(|p| p.get(&holder).cloned())
        .ok_or_else(|| format!("worker {holder} is unknown or gone"))?;
    let conn = connect(
        &shared.endpoint,
        info.address,
        &info.address.ip().to_string(),
        &info.certificate,
        &shared.tuning,
    )
    .await
    .map_err(|e| format!("worker {holder}: {e}"))?;
    let hello = Hello::Peer {
        version: PROTOCOL_VERSION,
        secret: shared.secret.clone(),
    };
    let max = usize::try_from(shared.governor.limit).unwrap_or(usize::MAX);
    let (_, w, r) = say_hello(&conn, &hello, max)
        .await
        .map_err(|e| format!("worker {holder}: {e}"))?;
    let pc = Arc::new(PeerConn {
        conn,
        max_reply: max,
        _hello: (w, r),
    });
    let mut conns = shared
        .peer_conns
        .lock()
        .map_err(|_| format!("worker {holder}: peer table poisoned"))?;
    Ok(conns.entry(holder).or_insert(pc).clone())
}

pub(super) async fn serve_peers(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let s = shared.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let Ok(pending) = read_hello(&conn).await else {
                conn.close(CloseCode::BadHello.code().into(), b"no valid hello");
                return;
            };
            let check = match &pending.hello {
                Hello::Peer { version, secret } => check_hello(*version, secret, &s.secret),
                _ => Err("this is a worker: only peers connect here".to_string()),
            };
            if let Err(reason) = check {
                eprintln!("anncat worker: refused {}: {reason}", conn.remote_address());
                pending.refuse(&conn, &reason).await;
                return;
            }
            let Ok((w, r)) = pending.accept(0, PEER_REQUEST_MAX_BYTES).await else {
                return;
            };
            // Requests come on the hello stream or on streams of their own.
            let (s2, conn2) = (s.clone(), conn.clone());
            tokio::spawn(async move { serve_requests(&s2, &conn2, w, r).await });
            while let Ok((send, recv)) = conn.accept_bi().await {
                let (s3, conn3) = (s.clone(), conn.clone());
                let (w, r) = (
                    FrameWriter::new(send),
                    FrameReader::new(recv, PEER_REQUEST_MAX_BYTES),
                );
                tokio::spawn(async move { serve_requests(&s3, &conn3, w, r).await });
            }
        });
    }
}

/// Answers a peer's requests on one stream until it ends; drops the peer's
/// connection on an oversized or malformed request.
pub(super) async fn serve_requests(
    s: &Shared,
    conn: &quinn::Connection,
    mut w: FrameWriter,
    mut r: FrameReader,
) {
    loop {
        match r.next::<PeerRequest>().await {
            Ok(Some(PeerRequest::Fetch(key))) => {
                let data = s.outputs.lock().ok().and_then(|o| o.get(&key).cloned());
                let reply = match data {
                    Some(d) => PeerReply::Data(d.as_ref().clone()),
                    None => PeerReply::Missing,
                };
                if w.send(&reply).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                w.finish();
                return;
            }
            Err(e) => {
                if matches!(e, NetError::FrameTooLarge { .. } | NetError::Malformed(_)) {
                    eprintln!("anncat worker: dropped peer {}: {e}", conn.remote_address());
                    conn.close(CloseCode::BadFrame.code().into(), e.to_string().as_bytes());
                }
                return;
            }
        }
    }
}
