//! The programmatic API end to end: a local cluster whose workers are this
//! very test binary (started as `api worker ...`) with user-defined
//! kernels. Checks results, worker-to-worker transfer of outputs, kernel
//! errors and panics, work a task deferred (failing it, or not), unknown
//! kernels, the memory governor failing a task that goes over the limit
//! (the worker survives), cancellation, and queued tasks fetched ahead
//! (a kernel's prefetch runs before the task does).
//!
//! `harness = false`: this file has its own `main`, which is either a
//! worker or the test runner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anncat::core::protocol::Want;
use anncat::{Graph, KernelRegistry, LocalCluster, LocalClusterConfig, decode, encode};

#[global_allocator]
static ALLOCATOR: anncat::worker::CountingAllocator = anncat::worker::CountingAllocator;

fn kernels() -> KernelRegistry {
    let mut k = KernelRegistry::new();
    k.register("value", |args: &[u8], _: &[Arc<Vec<u8>>]| Ok(args.to_vec()));
    k.register("sum", |_: &[u8], inputs: &[Arc<Vec<u8>>]| {
        let mut t = 0u64;
        for i in inputs {
            t += decode::<u64>(i)?;
        }
        encode(&t)
    });
    k.register("sleep_ms", |args: &[u8], _: &[Arc<Vec<u8>>]| {
        std::thread::sleep(Duration::from_millis(decode(args)?));
        encode(&std::process::id())
    });
    k.register("pid", |_: &[u8], _: &[Arc<Vec<u8>>]| {
        encode(&std::process::id())
    });
    // Kills the worker process running it.
    k.register(
        "abort",
        |_: &[u8], _: &[Arc<Vec<u8>>]| -> anncat::core::Result<Vec<u8>> { std::process::abort() },
    );
    k.register("fail", |_: &[u8], _: &[Arc<Vec<u8>>]| {
        Err(anncat::core::Error::option("the input was bad"))
    });
    k.register(
        "panic",
        |_: &[u8], _: &[Arc<Vec<u8>>]| -> anncat::core::Result<Vec<u8>> { panic!("kernel bug") },
    );
    // Leaves work for after it (see `deferred`): `true` makes that work fail.
    k.register("defer", |args: &[u8], _: &[Arc<Vec<u8>>]| {
        let fail: bool = decode(args)?;
        DEFERRED.with(|d| d.set(Some(fail)));
        encode(&7u64)
    });
    k.finish_each_with(deferred);
    // Notes in a file when it is fetched ahead and when it runs (slowly).
    k.register_prefetching(
        "note",
        |args: &[u8], _: &[Arc<Vec<u8>>]| {
            let (path, id): (String, u32) = decode(args)?;
            std::thread::sleep(Duration::from_millis(150));
            append_line(&path, &format!("ran {id}"));
            encode(&id)
        },
        |args: &[u8], _: &[Arc<Vec<u8>>]| {
            if let Ok((path, id)) = decode::<(String, u32)>(args) {
                append_line(&path, &format!("fetched {id}"));
            }
        },
    );
    // Allocates (and touches) the number of MiB in its arguments.
    k.register("hog_mib", |args: &[u8], _: &[Arc<Vec<u8>>]| {
        let mib: usize = decode(args)?;
        let v = vec![1u8; mib << 20];
        encode(&(v.iter().map(|&b| u64::from(b)).sum::<u64>() >> 20))
    });
    k
}

fn append_line(path: &str, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the notes");
    f.write_all(format!("{line}\n").as_bytes()).expect("note");
}

thread_local! {
    /// What the last `defer` task on this thread left: whether its work fails.
    static DEFERRED: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// The finisher of every task: the work a `defer` task left, run by the
/// worker (on its flush thread) before the task is reported.
fn deferred() -> Option<anncat::core::kernel::Deferred> {
    let fail = DEFERRED.with(|d| d.take())?;
    Some(Box::new(move || {
        if fail {
            Err(anncat::core::Error::Task(
                "the deferred flush failed".into(),
            ))
        } else {
            Ok(())
        }
    }))
}

fn cluster(workers: usize, memory_limit: u64) -> LocalCluster {
    LocalCluster::start(LocalClusterConfig {
        workers,
        memory_limit,
        ..LocalClusterConfig::default()
    })
    .expect("local cluster")
}

fn diamond_and_peer_transfer() {
    let c = cluster(2, 128 << 20);
    let mut client = c.client().expect("client");
    let mut g = Graph::new();
    // Two slow roots spread over both workers; the sink needs both, so one
    // input crosses from one worker to the other.
    let a = g
        .add("sleep_ms", &300u64, vec![], 1 << 20, "a")
        .expect("add");
    let b = g
        .add("sleep_ms", &300u64, vec![], 1 << 20, "b")
        .expect("add");
    let sink = g.add("sum", &(), vec![a, b], 1 << 20, "sink").expect("add");
    let job = client.submit("test", &g, Want::All).expect("submit");
    let r = client.wait(job, &mut |_| {}).expect("run");
    let (pa, pb): (u32, u32) = (
        decode(&r.outputs[&a]).expect("a"),
        decode(&r.outputs[&b]).expect("b"),
    );
    let pids = c.worker_pids();
    assert!(
        pids.contains(&pa) && pids.contains(&pb),
        "ran on the cluster's workers"
    );
    assert_ne!(pa, pb, "independent roots ran on different workers");
    assert_eq!(
        decode::<u64>(&r.outputs[&sink]).expect("sum"),
        u64::from(pa) + u64::from(pb)
    );
    assert_eq!(r.workers.len(), 2);
    assert!(
        r.workers
            .iter()
            .all(|w| w.peak_rss > 0 && !w.rss_samples.is_empty())
    );

    // A diamond, only the sink's output comes back.
    let mut g = Graph::new();
    let top = g.add("value", &1u64, vec![], 1, "top").expect("add");
    let top = g.add("sum", &(), vec![top], 1, "top2").expect("add");
    let l = g.add("sum", &(), vec![top], 1, "l").expect("add");
    let r2 = g.add("sum", &(), vec![top], 1, "r").expect("add");
    let bottom = g.add("sum", &(), vec![l, r2], 1, "bottom").expect("add");
    let r = client.run(&g).expect("run");
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(decode::<u64>(&r.outputs[&bottom]).expect("sum"), 2);
    // The same graph from a client over QUIC, as another host's would be,
    // while the in-process one is still connected: the same answer.
    let mut remote = c.network_client().expect("network client");
    assert!(format!("{remote:?}").contains("127.0.0.1"), "{remote:?}");
    assert!(
        format!("{client:?}").contains("in this process"),
        "{client:?}"
    );
    let r = remote.run(&g).expect("run over the network");
    assert_eq!(decode::<u64>(&r.outputs[&bottom]).expect("sum"), 2);
    drop(remote);
    let r = client.run(&g).expect("the in-process client still works");
    assert_eq!(decode::<u64>(&r.outputs[&bottom]).expect("sum"), 2);
    c.shutdown();
}

fn errors_are_reported_and_the_cluster_survives() {
    let c = cluster(1, 64 << 20);
    let mut client = c.client().expect("client");
    let one = |kernel: &str, args: Vec<u8>, mem: u64| {
        let mut g = Graph::new();
        g.push(anncat::core::graph::TaskSpec {
            id: anncat::TaskId(0),
            kernel: kernel.into(),
            args,
            deps: vec![],
            memory_bytes: mem,
            label: format!("{kernel} task"),
        });
        g
    };
    let e = client
        .run(&one("fail", vec![], 1))
        .expect_err("fails")
        .to_string();
    assert!(e.contains("the input was bad"), "{e}");
    let e = client
        .run(&one("panic", vec![], 1))
        .expect_err("panics")
        .to_string();
    assert!(
        e.contains("internal error") && e.contains("kernel bug"),
        "{e}"
    );
    let e = client
        .run(&one("nope", vec![], 1))
        .expect_err("unknown")
        .to_string();
    assert!(e.contains("no kernel named \"nope\""), "{e}");
    // Work a task deferred: its failure fails the task; its success
    // leaves the kernel's output as the result.
    let e = client
        .run(&one("defer", encode(&true).expect("enc"), 1))
        .expect_err("the deferred work fails")
        .to_string();
    assert!(e.contains("the deferred flush failed"), "{e}");
    let r = client
        .run(&one("defer", encode(&false).expect("enc"), 1))
        .expect("the deferred work succeeds");
    assert_eq!(
        decode::<u64>(&r.outputs[&anncat::TaskId(0)]).expect("dec"),
        7
    );
    // Estimated over the budget: refused before it runs.
    let e = client
        .run(&one("hog_mib", encode(&1usize).expect("enc"), 1 << 30))
        .expect_err("too big")
        .to_string();
    assert!(e.contains("memory") && e.contains("hog_mib task"), "{e}");
    // Estimated small, but goes over the limit: the governor fails it.
    let e = client
        .run(&one("hog_mib", encode(&200usize).expect("enc"), 1 << 20))
        .expect_err("over the limit")
        .to_string();
    assert!(
        e.contains("over the worker's memory limit of 64 MiB"),
        "{e}"
    );
    // Same worker, still serving.
    let r = client
        .run(&one("hog_mib", encode(&8usize).expect("enc"), 16 << 20))
        .expect("fits");
    assert_eq!(
        decode::<u64>(&r.outputs[&anncat::TaskId(0)]).expect("dec"),
        8
    );
    c.shutdown();
}

fn cancel_stops_a_job() {
    let c = cluster(1, 64 << 20);
    let mut client = c.client().expect("client");
    let mut g = Graph::new();
    for i in 0..50 {
        g.add("sleep_ms", &100u64, vec![], 1, format!("s{i}"))
            .expect("add");
    }
    let job = client.submit("slow", &g, Want::Sinks).expect("submit");
    let canceller = client.canceller();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        canceller.cancel(job).expect("cancel");
    });
    let started = Instant::now();
    let e = client
        .wait(job, &mut |_| {})
        .expect_err("cancelled")
        .to_string();
    t.join().expect("thread");
    assert!(e.contains("cancelled"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "did not stop early"
    );
    c.shutdown();
}

fn a_task_that_kills_three_workers_fails_the_run() {
    let c = cluster(3, 64 << 20);
    let mut client = c.client().expect("client");
    let mut g = Graph::new();
    g.add("abort", &(), vec![], 1, "poison").expect("add");
    let e = client.run(&g).expect_err("fails").to_string();
    assert!(
        e.contains("poison") && e.contains("3 workers that died"),
        "{e}"
    );
    c.shutdown();
}

fn queued_tasks_are_fetched_ahead_of_their_run() {
    let c = cluster(1, 64 << 20);
    let mut client = c.client().expect("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let notes = dir.path().join("notes").to_string_lossy().into_owned();
    let mut g = Graph::new();
    for id in 0..4u32 {
        g.add("note", &(notes.clone(), id), vec![], 1 << 20, "note")
            .expect("add");
    }
    assert_eq!(client.run(&g).expect("run").outputs.len(), 4);
    let lines: Vec<String> = std::fs::read_to_string(&notes)
        .expect("notes")
        .lines()
        .map(str::to_string)
        .collect();
    let at = |line: String| lines.iter().position(|l| *l == line);
    for id in 0..4u32 {
        assert!(at(format!("ran {id}")).is_some(), "{id} ran: {lines:?}");
    }
    // The first starts at once; each later one waited in the queue behind
    // a running task, and was fetched ahead before it ran.
    for id in 1..4u32 {
        let fetched = at(format!("fetched {id}"));
        assert!(
            fetched.is_some_and(|f| Some(f) < at(format!("ran {id}"))),
            "{id} fetched ahead of its run: {lines:?}"
        );
    }
    c.shutdown();
}

fn a_stopped_scheduler_is_an_error_for_its_local_client() {
    let c = cluster(1, 64 << 20);
    let mut client = c.client().expect("client");
    let mut g = Graph::new();
    g.add("value", &7u64, vec![], 1, "seven").expect("add");
    assert_eq!(client.run(&g).expect("run").outputs.len(), 1);
    c.shutdown();
    let e = client.run(&g).expect_err("no scheduler").to_string();
    assert!(e.contains("lost the connection to the scheduler"), "{e}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        anncat::worker::governor::mark_installed();
        if let Err(e) = anncat::cli::worker_main(&args[1..], kernels()) {
            eprintln!("api worker: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let tests: [(&str, fn()); 6] = [
        (
            "queued_tasks_are_fetched_ahead_of_their_run",
            queued_tasks_are_fetched_ahead_of_their_run,
        ),
        ("diamond_and_peer_transfer", diamond_and_peer_transfer),
        (
            "a_stopped_scheduler_is_an_error_for_its_local_client",
            a_stopped_scheduler_is_an_error_for_its_local_client,
        ),
        (
            "a_task_that_kills_three_workers_fails_the_run",
            a_task_that_kills_three_workers_fails_the_run,
        ),
        (
            "errors_are_reported_and_the_cluster_survives",
            errors_are_reported_and_the_cluster_survives,
        ),
        ("cancel_stops_a_job", cancel_stops_a_job),
    ];
    // libtest's conventions: a positional filter, `--skip NAME` (repeatable).
    let (mut filter, mut skips, mut rest) = (None, Vec::new(), args.iter().skip(1));
    while let Some(a) = rest.next() {
        if a == "--skip" {
            skips.extend(rest.next().cloned());
        } else if !a.starts_with('-') && filter.is_none() {
            filter = Some(a.clone());
        }
    }
    let mut failed = 0;
    for (name, f) in tests {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str()))
            || skips.iter().any(|s| name.contains(s.as_str()))
        {
            continue;
        }
        let ok = std::panic::catch_unwind(f).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        failed += usize::from(!ok);
    }
    if failed > 0 {
        println!("test result: FAILED. {failed} failed");
        std::process::exit(1);
    }
    println!("test result: ok.");
}
