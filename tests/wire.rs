//! Wire hardening against a real `anncat worker`: the test plays the
//! scheduler (it writes the cluster file the worker joins), then talks to
//! the worker's peer endpoint as a peer would — with a wrong secret, and
//! with frames announcing more bytes than the limit. The worker must drop
//! such peers without allocating what they announce, and stay up.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anncat_core::protocol::{Hello, PROTOCOL_VERSION, Welcome, WorkerInfo};
use anncat_net::ClusterFile;
use anncat_net::frame::{HELLO_MAX_BYTES, read_frame, write_frame};
use anncat_net::hello::read_hello;
use anncat_net::tls::{client_endpoint, connect, server_endpoint};
use anncat_net::{Identity, TransportTuning};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn peer_stream(
    addr: SocketAddr,
    cert: &[u8],
    secret: &str,
) -> (
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    Welcome,
) {
    let endpoint = client_endpoint().expect("endpoint");
    let tuning = TransportTuning {
        idle_timeout: Duration::from_secs(10),
        ..TransportTuning::default()
    };
    let conn = connect(&endpoint, addr, &addr.ip().to_string(), cert, &tuning)
        .await
        .expect("connect");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let hello = Hello::Peer {
        version: PROTOCOL_VERSION,
        secret: secret.to_string(),
    };
    write_frame(&mut send, &hello).await.expect("hello");
    let welcome: Welcome = read_frame(&mut recv, HELLO_MAX_BYTES)
        .await
        .expect("welcome")
        .expect("a reply");
    (conn, send, recv, welcome)
}

async fn expect_dropped(conn: &quinn::Connection) -> String {
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the worker closed the connection");
    closed.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_refuses_bad_peers_and_oversized_frames() {
    let dir = tempfile::tempdir().expect("tmp");
    let identity = Identity::generate(&["127.0.0.1".to_string()]).expect("identity");
    let tuning = TransportTuning {
        idle_timeout: Duration::from_secs(10),
        ..TransportTuning::default()
    };
    let endpoint = server_endpoint(([127, 0, 0, 1], 0).into(), &identity, &tuning).expect("listen");
    let secret = "ab".repeat(32);
    let cluster = ClusterFile {
        address: endpoint.local_addr().expect("addr").to_string(),
        certificate: identity.certificate_pem(),
        secret: secret.clone(),
    };
    let file = dir.path().join("cluster.json");
    cluster.write(&file).expect("cluster file");
    let worker = Kill(
        Command::new(env!("CARGO_BIN_EXE_anncat"))
            .args(["worker", "--memory-limit", "64MiB", "--cluster-file"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker"),
    );
    // Play the scheduler: accept the worker's registration.
    let incoming = tokio::time::timeout(Duration::from_secs(20), endpoint.accept())
        .await
        .expect("the worker dials in")
        .expect("incoming");
    let sched_conn = incoming.await.expect("handshake");
    let pending = read_hello(&sched_conn).await.expect("hello");
    let info: WorkerInfo = match &pending.hello {
        Hello::Worker {
            info,
            secret: s,
            version,
        } => {
            assert_eq!((s, *version), (&secret, PROTOCOL_VERSION));
            info.clone()
        }
        other => panic!("expected a worker hello, got {other:?}"),
    };
    let (_w, _r) = pending.accept(0, 1 << 20).await.expect("accept");
    let pid = worker.0.id();
    assert_eq!(info.pid, pid);

    // A peer with the wrong secret is refused.
    let (conn, _, _, welcome) = peer_stream(info.address, &info.certificate, "wrong").await;
    match welcome {
        Welcome::Refused { reason } => assert!(reason.contains("secret"), "{reason}"),
        Welcome::Accepted { .. } => panic!("a wrong secret was accepted"),
    }
    expect_dropped(&conn).await;

    // An authenticated peer announcing a 4 GiB request is dropped at once.
    let before = rss_kib(pid);
    let (conn, mut send, _recv, welcome) =
        peer_stream(info.address, &info.certificate, &secret).await;
    assert!(matches!(welcome, Welcome::Accepted { .. }));
    send.write_all(&u32::MAX.to_le_bytes())
        .await
        .expect("header");
    let _ = send.write_all(&[0u8; 1024]).await;
    let why = expect_dropped(&conn).await;
    assert!(why.contains("frame") || why.contains("limit"), "{why}");

    // An unauthenticated caller announcing a huge hello is dropped too.
    let endpoint2 = client_endpoint().expect("endpoint");
    let conn = connect(
        &endpoint2,
        info.address,
        &info.address.ip().to_string(),
        &info.certificate,
        &tuning,
    )
    .await
    .expect("connect");
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    send.write_all(&(1u32 << 30).to_le_bytes())
        .await
        .expect("header");
    expect_dropped(&conn).await;

    // The worker is still up, still registered, and allocated nothing like it.
    let mut worker = worker;
    assert!(
        worker.0.try_wait().expect("status").is_none(),
        "the worker died"
    );
    assert!(
        sched_conn.close_reason().is_none(),
        "the worker left the scheduler"
    );
    let after = rss_kib(pid);
    assert!(
        after < before + 64 * 1024,
        "worker RSS grew from {before} KiB to {after} KiB"
    );
}
