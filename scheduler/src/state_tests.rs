//! Scheduler state-machine tests with a recording [`Comm`]: no network.

use super::*;
use anncat_exec::protocol::TaskStats;

#[derive(Default)]
struct Recorder {
    to_workers: Vec<(WorkerId, ToWorker)>,
    to_clients: Vec<(ClientId, ToClient)>,
    dropped: Vec<WorkerId>,
}

impl Comm for Recorder {
    fn to_worker(&mut self, worker: WorkerId, msg: ToWorker) {
        self.to_workers.push((worker, msg));
    }
    fn to_client(&mut self, client: ClientId, msg: ToClient) {
        self.to_clients.push((client, msg));
    }
    fn drop_worker(&mut self, worker: WorkerId, _reason: &str) {
        self.dropped.push(worker);
    }
}

impl Recorder {
    /// Assignments sent since the last call, per worker.
    fn take_runs(&mut self) -> Vec<(WorkerId, Assignment)> {
        let mut out = Vec::new();
        for (w, m) in std::mem::take(&mut self.to_workers) {
            match m {
                ToWorker::Run(runs) => out.extend(runs.into_iter().map(|a| (w, a))),
                other => self.to_workers.push((w, other)),
            }
        }
        out
    }

    fn releases(&self) -> Vec<(WorkerId, TaskKey)> {
        let mut out = Vec::new();
        for (w, m) in &self.to_workers {
            if let ToWorker::Release(keys) = m {
                out.extend(keys.iter().map(|k| (*w, *k)));
            }
        }
        out
    }

    fn finished(&self) -> bool {
        self.to_clients
            .iter()
            .any(|(_, m)| matches!(m, ToClient::JobFinished { .. }))
    }

    fn failure(&self) -> Option<String> {
        self.to_clients.iter().find_map(|(_, m)| match m {
            ToClient::JobFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
    }

    fn done_tasks(&self) -> Vec<TaskId> {
        let mut out = Vec::new();
        for (_, m) in &self.to_clients {
            if let ToClient::TasksDone { done, .. } = m {
                out.extend(done.iter().map(|d| d.task));
            }
        }
        out
    }
}

fn info(limit: u64, threads: u32) -> WorkerInfo {
    WorkerInfo {
        name: "w".into(),
        memory_limit: limit,
        threads,
        address: "127.0.0.1:1".parse().expect("addr"),
        certificate: vec![],
        pid: 1,
    }
}

fn done(key: TaskKey) -> TaskReport {
    TaskReport {
        key,
        outcome: TaskOutcome::Done {
            output: Some(vec![1]),
        },
        stats: TaskStats {
            output_bytes: 1,
            ..TaskStats::default()
        },
    }
}

const C: ClientId = ClientId(1);

fn start(s: &mut SchedulerState, r: &mut Recorder, g: &Graph, want: Want) -> JobId {
    let job = s.on_new_job(C, "test".into(), r);
    s.on_add_tasks(C, job, g.tasks().to_vec(), r);
    s.on_start(C, job, want, r);
    s.schedule(r);
    job
}

fn diamond() -> Graph {
    let mut g = Graph::new();
    let a = g.add("k", &(), vec![], 10, "a").expect("add");
    let b = g.add("k", &(), vec![a], 10, "b").expect("add");
    let c = g.add("k", &(), vec![a], 10, "c").expect("add");
    g.add("k", &(), vec![b, c], 10, "d").expect("add");
    g
}

/// Runs every assignment to completion in order until the job ends.
fn drain(s: &mut SchedulerState, r: &mut Recorder) {
    for _ in 0..1000 {
        let runs = r.take_runs();
        if runs.is_empty() {
            return;
        }
        for (w, a) in runs {
            s.on_task_reports(w, vec![done(a.key)], r);
        }
        s.schedule(r);
    }
    panic!("did not converge");
}

#[test]
fn runs_a_diamond_in_dependency_order_and_releases_outputs() {
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig::default());
    let mut r = Recorder::default();
    s.on_worker_joined(WorkerId(0), info(100, 1), now, &mut r);
    let job = start(&mut s, &mut r, &diamond(), Want::Sinks);
    let runs = r.take_runs();
    assert_eq!(runs.len(), 1, "only the root is ready");
    assert_eq!(runs[0].1.key.task, TaskId(0));
    assert!(runs[0].1.keep_output && !runs[0].1.send_output);
    s.on_task_reports(WorkerId(0), vec![done(runs[0].1.key)], &mut r);
    s.schedule(&mut r);
    let runs = r.take_runs();
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter()
            .all(|(_, a)| a.inputs.len() == 1 && a.inputs[0].holder == WorkerId(0))
    );
    for (w, a) in runs {
        s.on_task_reports(w, vec![done(a.key)], &mut r);
    }
    s.schedule(&mut r);
    drain(&mut s, &mut r);
    assert!(r.finished());
    assert_eq!(r.done_tasks().len(), 4);
    let released: Vec<TaskId> = r.releases().iter().map(|(_, k)| k.task).collect();
    assert!(
        released.contains(&TaskId(0)) && released.contains(&TaskId(1)),
        "{released:?}"
    );
    assert_eq!(s.job_count(), 0);
    assert!(
        s.held_by(WorkerId(0)).is_empty(),
        "no output kept after the job"
    );
    let _ = job;
}

#[test]
fn placement_respects_memory_budgets_and_in_flight_bounds() {
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig {
        prefetch: 1,
        ..SchedulerConfig::default()
    });
    // (prefetch 1: in flight at most threads + 1)
    let mut r = Recorder::default();
    s.on_worker_joined(WorkerId(0), info(100, 1), now, &mut r);
    s.on_worker_joined(WorkerId(1), info(50, 4), now, &mut r);
    let mut g = Graph::new();
    for i in 0..20 {
        g.add(
            "k",
            &(),
            vec![],
            if i % 2 == 0 { 60 } else { 20 },
            format!("t{i}"),
        )
        .expect("add");
    }
    start(&mut s, &mut r, &g, Want::Sinks);
    let runs = r.take_runs();
    let mut given: HashMap<WorkerId, Vec<u64>> = HashMap::new();
    for (w, a) in &runs {
        given.entry(*w).or_default().push(a.memory_bytes);
        if *w == WorkerId(1) {
            assert!(
                a.memory_bytes <= 50,
                "a 60-byte task went to the 50-byte worker"
            );
        }
    }
    // What may run at once (as many of the largest tasks in flight as the
    // worker has threads) fits each budget.
    let at_once = |w: u64, threads: usize| {
        let mut m = given[&WorkerId(w)].clone();
        m.sort_unstable_by(|a, b| b.cmp(a));
        m.iter().take(threads).sum::<u64>()
    };
    assert!(at_once(0, 1) <= 100 && at_once(1, 4) <= 50, "{given:?}");
    assert!(
        given[&WorkerId(0)].len() == 2,
        "in flight threads + prefetch: one runs, one waits queued (its estimate \
         need not fit beside the running one's) {given:?}"
    );
    assert_eq!(
        given[&WorkerId(1)],
        vec![20, 20],
        "four threads: a third 20-byte task would not fit beside two"
    );
    // Everything still completes.
    for (w, a) in runs {
        s.on_task_reports(w, vec![done(a.key)], &mut r);
    }
    s.schedule(&mut r);
    drain(&mut s, &mut r);
    assert!(r.finished());
}

#[test]
fn oversized_tasks_fail_the_job_with_a_clear_error() {
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig::default());
    let mut r = Recorder::default();
    s.on_worker_joined(WorkerId(0), info(10 << 20, 1), now, &mut r);
    let mut g = Graph::new();
    g.add("k", &(), vec![], 100 << 20, "huge").expect("add");
    start(&mut s, &mut r, &g, Want::Sinks);
    let e = r.failure().expect("failed");
    assert!(e.contains("huge") && e.contains("memory"), "{e}");
}

#[test]
fn prefers_the_worker_holding_the_inputs() {
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig::default());
    let mut r = Recorder::default();
    s.on_worker_joined(WorkerId(0), info(100, 1), now, &mut r);
    s.on_worker_joined(WorkerId(1), info(100, 1), now, &mut r);
    let mut g = Graph::new();
    let a = g.add("k", &(), vec![], 1, "a").expect("add");
    let b = g.add("k", &(), vec![], 1, "b").expect("add");
    g.add("k", &(), vec![a], 1, "after-a").expect("add");
    g.add("k", &(), vec![b], 1, "after-b").expect("add");
    start(&mut s, &mut r, &g, Want::Sinks);
    let runs = r.take_runs();
    let where_ = |t: u64| {
        runs.iter()
            .find(|(_, a)| a.key.task == TaskId(t))
            .map(|(w, _)| *w)
            .expect("ran")
    };
    let (wa, wb) = (where_(0), where_(1));
    assert_ne!(wa, wb, "independent roots spread over workers");
    for (w, a) in runs {
        s.on_task_reports(w, vec![done(a.key)], &mut r);
    }
    s.schedule(&mut r);
    for (w, a) in r.take_runs() {
        let expected = if a.key.task == TaskId(2) { wa } else { wb };
        assert_eq!(w, expected, "{} ran away from its input", a.label);
        assert_eq!(a.inputs[0].holder, w);
    }
}

#[test]
fn a_lost_worker_s_tasks_rerun_and_lost_outputs_are_recomputed() {
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig::default());
    let mut r = Recorder::default();
    s.on_worker_joined(WorkerId(0), info(100, 1), now, &mut r);
    let job = start(&mut s, &mut r, &diamond(), Want::All);
    // Root finishes on w0; b and c are assigned to w0 too.
    let runs = r.take_runs();
    s.on_task_reports(WorkerId(0), vec![done(runs[0].1.key)], &mut r);
    s.schedule(&mut r);
    let runs = r.take_runs();
    assert_eq!(runs.len(), 2);
    // b finishes, then w0 dies while running c; a's and b's outputs are gone.
    s.on_tasks_started(WorkerId(0), &[runs[1].1.key], &mut r);
    s.on_task_reports(WorkerId(0), vec![done(runs[0].1.key)], &mut r);
    s.on_worker_joined(WorkerId(1), info(100, 1), now, &mut r);
    s.on_worker_lost(WorkerId(0), "killed", &mut r);
    s.schedule(&mut r);
    assert!(r.failure().is_none());
    // Only a can run now (b and c need it); then b and c again, then d.
    let runs = r.take_runs();
    assert_eq!(
        runs.iter().map(|(_, a)| a.key.task).collect::<Vec<_>>(),
        vec![TaskId(0)]
    );
    assert!(runs.iter().all(|(w, _)| *w == WorkerId(1)));
    s.on_task_reports(WorkerId(1), vec![done(runs[0].1.key)], &mut r);
    s.schedule(&mut r);
    let mut again: Vec<TaskId> = r
        .take_runs()
        .into_iter()
        .map(|(w, a)| {
            s.on_task_reports(w, vec![done(a.key)], &mut r);
            a.key.task
        })
        .collect();
    again.sort();
    assert_eq!(
        again,
        vec![TaskId(1), TaskId(2)],
        "b recomputed (its output was lost), c re-run"
    );
    s.schedule(&mut r);
    drain(&mut s, &mut r);
    assert!(r.finished(), "{:?}", r.failure());
    let _ = job;
}

#[test]
fn a_task_that_kills_three_workers_fails_the_job() {
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig::default());
    let mut r = Recorder::default();
    let mut g = Graph::new();
    g.add("k", &(), vec![], 1, "poison").expect("add");
    s.on_worker_joined(WorkerId(0), info(100, 1), now, &mut r);
    start(&mut s, &mut r, &g, Want::Sinks);
    for w in 0..3u64 {
        let runs = r.take_runs();
        assert_eq!(runs.len(), 1, "round {w}");
        // No "started" message arrives: the worker died first. The oldest
        // task in flight is presumed running.
        s.on_worker_joined(WorkerId(w + 1), info(100, 1), now, &mut r);
        s.on_worker_lost(runs[0].0, "segfault", &mut r);
        s.schedule(&mut r);
    }
    let e = r.failure().expect("failed");
    assert!(
        e.contains("poison") && e.contains("3 workers") && e.contains("segfault"),
        "{e}"
    );
}

#[test]
fn tasks_queued_behind_a_running_one_are_not_blamed() {
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig::default());
    let mut r = Recorder::default();
    let mut g = Graph::new();
    let a = g.add("k", &(), vec![], 1, "a").expect("add");
    let b = g.add("k", &(), vec![], 1, "b").expect("add");
    s.on_worker_joined(WorkerId(0), info(100, 1), now, &mut r);
    let job = start(&mut s, &mut r, &g, Want::Sinks);
    let runs = r.take_runs();
    assert_eq!(runs.len(), 2, "one running, one queued");
    let key = |task| TaskKey { job, task };
    s.on_tasks_started(WorkerId(0), &[key(b)], &mut r);
    s.on_worker_lost(WorkerId(0), "killed", &mut r);
    assert_eq!(s.crashes(key(b)), Some(1), "the started task is blamed");
    assert_eq!(s.crashes(key(a)), Some(0), "the queued task is not");
}

#[test]
fn hung_workers_are_dropped_and_kernel_errors_fail_the_job() {
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig {
        hang_timeout: Duration::from_secs(1),
        ..SchedulerConfig::default()
    });
    let mut r = Recorder::default();
    s.on_worker_joined(WorkerId(0), info(100, 1), now, &mut r);
    s.on_worker_joined(WorkerId(1), info(100, 1), now, &mut r);
    s.on_heartbeat(
        WorkerId(1),
        Heartbeat::default(),
        0.0,
        now + Duration::from_millis(1500),
    );
    s.on_tick(now + Duration::from_millis(1600), &mut r);
    assert_eq!(r.dropped, vec![WorkerId(0)]);
    assert_eq!(s.worker_count(), 1);
    let mut g = Graph::new();
    g.add("k", &(), vec![], 1, "bad").expect("add");
    start(&mut s, &mut r, &g, Want::Sinks);
    let runs = r.take_runs();
    s.on_task_reports(
        runs[0].0,
        vec![TaskReport {
            key: runs[0].1.key,
            outcome: TaskOutcome::Failed {
                kind: FailureKind::Error,
                message: "bad input file".into(),
            },
            stats: TaskStats::default(),
        }],
        &mut r,
    );
    assert_eq!(r.failure().as_deref(), Some("bad input file"));
    assert_eq!(s.job_count(), 0);
}

#[test]
fn invalid_graphs_and_empty_graphs() {
    let mut s = SchedulerState::new(SchedulerConfig::default());
    let mut r = Recorder::default();
    start(&mut s, &mut r, &Graph::new(), Want::Sinks);
    assert!(r.finished());
    let mut cyclic = Graph::new();
    cyclic.push(TaskSpec {
        id: TaskId(0),
        kernel: "k".into(),
        args: vec![],
        deps: vec![TaskId(0)],
        memory_bytes: 0,
        label: String::new(),
    });
    let mut r = Recorder::default();
    start(&mut s, &mut r, &cyclic, Want::Sinks);
    assert!(r.failure().expect("fails").contains("cycle"));
}

#[test]
fn jobs_fail_when_every_worker_is_gone_for_too_long() {
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig {
        no_worker_timeout: Some(Duration::from_millis(100)),
        ..SchedulerConfig::default()
    });
    let mut r = Recorder::default();
    s.on_worker_joined(WorkerId(0), info(100, 1), now, &mut r);
    start(&mut s, &mut r, &diamond(), Want::Sinks);
    s.on_worker_lost(WorkerId(0), "oom-killed", &mut r);
    s.on_tick(Instant::now(), &mut r);
    assert!(r.failure().is_none(), "not yet");
    s.on_tick(Instant::now() + Duration::from_secs(1), &mut r);
    let e = r.failure().expect("failed");
    assert!(
        e.contains("no workers left") && e.contains("oom-killed"),
        "{e}"
    );
}

#[test]
fn a_worker_reporting_a_task_it_was_not_given_is_dropped() {
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig::default());
    let mut r = Recorder::default();
    let mut g = Graph::new();
    let a = g.add("k", &(), vec![], 1, "a").expect("add");
    s.on_worker_joined(WorkerId(0), info(100, 1), now, &mut r);
    s.on_worker_joined(WorkerId(1), info(100, 1), now, &mut r);
    let job = start(&mut s, &mut r, &g, Want::Sinks);
    let runs = r.take_runs();
    assert_eq!(runs.len(), 1);
    let (given, other) = if runs[0].0 == WorkerId(0) {
        (WorkerId(0), WorkerId(1))
    } else {
        (WorkerId(1), WorkerId(0))
    };
    // The other worker claims the task: dropped, the job goes on.
    s.on_task_reports(other, vec![done(TaskKey { job, task: a })], &mut r);
    assert_eq!(r.dropped, [other]);
    assert!(!r.finished() && r.failure().is_none());
    // A start for a task it was not given is a violation too.
    s.on_tasks_started(given, &[TaskKey { job, task: a }], &mut r);
    s.on_tasks_started(
        given,
        &[TaskKey {
            job,
            task: TaskId(99),
        }],
        &mut r,
    );
    assert_eq!(r.dropped, [other, given]);
    assert_eq!(s.worker_count(), 0);
}

#[test]
fn a_job_failed_while_scheduling_leaves_no_reservation_behind() {
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig::default());
    let mut r = Recorder::default();
    s.on_worker_joined(WorkerId(0), info(100, 4), now, &mut r);
    // `a` is assigned in the same pass that finds `b` fits no worker.
    let mut g = Graph::new();
    g.add("k", &(), vec![], 60, "a").expect("add");
    g.add("k", &(), vec![], 1000, "b").expect("add");
    start(&mut s, &mut r, &g, Want::Sinks);
    assert!(r.failure().is_some(), "the job fails");
    r.take_runs();
    // The whole budget is free again: a task of 100 runs at once.
    let mut g = Graph::new();
    g.add("k", &(), vec![], 100, "c").expect("add");
    start(&mut s, &mut r, &g, Want::Sinks);
    assert_eq!(
        r.take_runs().len(),
        1,
        "no reservation of the failed job is left"
    );
}

#[test]
fn a_resumed_graph_of_100k_tasks_runs_with_ids_looked_up_not_searched() {
    // 300k tasks in threes: x and a finished before the resume, b depends
    // on a. The remaining graph drops every x, so its ids are not positions.
    let mut g = Graph::new();
    let mut done_before = std::collections::HashMap::new();
    for _ in 0..100_000 {
        let x = g.add("k", &(), vec![], 1, "x").expect("add");
        let a = g.add("k", &(), vec![], 1, "a").expect("add");
        g.add("k", &(), vec![a], 1, "b").expect("add");
        done_before.insert(x, vec![7u8]);
        done_before.insert(a, vec![7u8]);
    }
    let remaining = anncat_exec::journal::remaining_graph(&g, &done_before);
    assert_eq!(
        remaining.len(),
        200_000,
        "each b still needs its a's output"
    );
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig::default());
    let mut r = Recorder::default();
    for w in 0..4 {
        s.on_worker_joined(WorkerId(w), info(1 << 40, 256), now, &mut r);
    }
    start(&mut s, &mut r, &remaining, Want::Sinks);
    let mut rounds = 0;
    while !r.finished() {
        let runs = r.take_runs();
        assert!(!runs.is_empty(), "stalled: {:?}", r.failure());
        for (w, a) in runs {
            s.on_task_reports(w, vec![done(a.key)], &mut r);
        }
        s.schedule(&mut r);
        r.to_clients
            .retain(|(_, m)| matches!(m, ToClient::JobFinished { .. }));
        rounds += 1;
        assert!(rounds < 1_000_000, "did not converge");
    }
    assert_eq!(s.job_count(), 0);
}

#[test]
fn a_computed_task_frees_its_slot_and_memory_but_is_done_only_when_finished() {
    let now = Instant::now();
    let mut s = SchedulerState::new(SchedulerConfig {
        prefetch: 1,
        ..SchedulerConfig::default()
    });
    let mut r = Recorder::default();
    // Two threads, prefetch 1: three tasks in flight; 100 bytes: one
    // 60-byte task (two could run at once).
    s.on_worker_joined(WorkerId(0), info(100, 2), now, &mut r);
    let mut g = Graph::new();
    let tasks: Vec<TaskId> = (0..4)
        .map(|i| g.add("k", &(), vec![], 60, format!("t{i}")).expect("add"))
        .collect();
    let job = start(&mut s, &mut r, &g, Want::Sinks);
    let first = r.take_runs();
    assert_eq!(first.len(), 1, "memory admits one 60-byte task");
    let a = first[0].1.key;
    s.on_tasks_started(WorkerId(0), &[a], &mut r);
    s.on_tasks_computed(WorkerId(0), &[a], &mut r);
    s.schedule(&mut r);
    let second = r.take_runs();
    assert_eq!(
        second.len(),
        1,
        "the computed task's memory and slot are free"
    );
    let b = second[0].1.key;
    assert!(r.done_tasks().is_empty(), "computed is not done");
    // The worker dies while `a` is flushed and `b` runs: both run again,
    // and only `b` is blamed.
    s.on_tasks_started(WorkerId(0), &[b], &mut r);
    s.on_worker_lost(WorkerId(0), "killed", &mut r);
    assert_eq!(s.crashes(a), Some(0), "a computed task is not blamed");
    assert_eq!(s.crashes(b), Some(1));
    s.on_worker_joined(WorkerId(1), info(100, 1), now, &mut r);
    s.schedule(&mut r);
    // Saying a task was computed twice, or one never given, is a violation.
    let runs = r.take_runs();
    let c = runs[0].1.key;
    s.on_tasks_computed(WorkerId(1), &[c], &mut r);
    s.on_tasks_computed(WorkerId(1), &[c], &mut r);
    assert_eq!(r.dropped, vec![WorkerId(1)]);
    s.on_worker_joined(WorkerId(2), info(100, 1), now, &mut r);
    s.schedule(&mut r);
    drain(&mut s, &mut r);
    assert!(r.finished());
    let mut done = r.done_tasks();
    done.sort();
    done.dedup();
    assert_eq!(done, tasks, "every task done once the job ends");
    let _ = job;
}
