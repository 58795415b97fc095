//! Placement: which ready task goes to which worker (memory-aware,
//! locality-aware, bounded in flight), and the bookkeeping of a task's
//! state in its job.

use super::*;

impl SchedulerState {
    /// Places ready tasks on workers and sends everything queued.
    pub fn schedule(&mut self, comm: &mut dyn Comm) {
        let mut deferred: Vec<(JobId, u32)> = Vec::new();
        let mut misses = 0;
        let mut failed: Vec<(JobId, String)> = Vec::new();
        while self.workers.values().any(Worker::has_slot) {
            let Some((jid, idx)) = self.ready.pop_front() else {
                break;
            };
            let Some(job) = self.jobs.get_mut(&jid) else {
                continue;
            };
            let Some(t) = job.tasks.get(idx as usize) else {
                continue;
            };
            if t.state != State::Ready {
                continue;
            }
            let mem = t.spec.memory_bytes;
            if !self.workers.values().any(|w| mem <= w.info.memory_limit) {
                let max = self
                    .workers
                    .values()
                    .map(|w| w.info.memory_limit)
                    .max()
                    .unwrap_or(0);
                failed.push((
                    jid,
                    format!(
                        "task {} ({}) needs about {} MiB, more than any worker's memory budget ({} MiB): raise --memory-limit",
                        t.spec.id,
                        t.spec.label,
                        mem.div_ceil(1 << 20),
                        max >> 20
                    ),
                ));
                continue;
            }
            let mut best: Option<(WorkerId, u64, usize)> = None;
            for (&wid, w) in &self.workers {
                if !w.has_slot() || !w.fits(mem) {
                    continue;
                }
                let local: u64 = t
                    .deps
                    .iter()
                    .map(|&d| &job.tasks[d as usize])
                    .filter(|d| d.holders.contains(&wid))
                    .map(|d| d.output_bytes + 1)
                    .sum();
                let load = w.in_flight();
                let better = match best {
                    None => true,
                    Some((_, bl, bload)) => local > bl || (local == bl && load < bload),
                };
                if better {
                    best = Some((wid, local, load));
                }
            }
            let Some((wid, _, _)) = best else {
                deferred.push((jid, idx));
                misses += 1;
                if misses >= self.config.scan_limit {
                    break;
                }
                continue;
            };
            let inputs: Vec<InputRef> = t
                .deps
                .iter()
                .map(|&d| {
                    let dep = &job.tasks[d as usize];
                    let holder = if dep.holders.contains(&wid) {
                        wid
                    } else {
                        dep.holders[0]
                    };
                    InputRef {
                        key: TaskKey {
                            job: jid,
                            task: dep.spec.id,
                        },
                        holder,
                    }
                })
                .collect();
            let key = TaskKey {
                job: jid,
                task: t.spec.id,
            };
            let assignment = Assignment {
                key,
                kernel: t.spec.kernel.clone(),
                args: t.spec.args.clone(),
                memory_bytes: mem,
                label: t.spec.label.clone(),
                inputs,
                send_output: t.wanted,
                keep_output: !t.dependents.is_empty(),
            };
            job.tasks[idx as usize].state = State::Running(wid);
            if !job.participants.contains(&wid) {
                job.participants.push(wid);
            }
            let w = self.workers.get_mut(&wid).expect("chosen worker exists");
            self.next_seq += 1;
            w.running.insert(key, (mem, false, self.next_seq));
            self.runs.entry(wid).or_default().push(assignment);
        }
        for d in deferred.into_iter().rev() {
            self.ready.push_front(d);
        }
        for (job, error) in failed {
            self.fail_job(job, error, comm);
        }
        for (wid, runs) in std::mem::take(&mut self.runs) {
            if !runs.is_empty() {
                comm.to_worker(wid, ToWorker::Run(runs));
            }
        }
        for (wid, keys) in std::mem::take(&mut self.releases) {
            if !keys.is_empty() && self.workers.contains_key(&wid) {
                comm.to_worker(wid, ToWorker::Release(keys));
            }
        }
        for (&jid, job) in &mut self.jobs {
            if !job.finished_batch.is_empty() {
                comm.to_client(
                    job.client,
                    ToClient::TasksDone {
                        job: jid,
                        done: std::mem::take(&mut job.finished_batch),
                    },
                );
            }
        }
    }
}

pub(super) fn index_of(job: &Job, task: TaskId) -> Option<u32> {
    // Graphs built with `Graph::add` number tasks 0..n in order; others
    // (a resumed graph) are looked up.
    match &job.index {
        Some(index) => index.get(&task).copied(),
        None => {
            let i = task.0 as usize;
            job.tasks
                .get(i)
                .is_some_and(|t| t.spec.id == task)
                .then_some(i as u32)
        }
    }
}

/// A finished task's output just became unavailable: dependents waiting on
/// it count it again.
pub(super) fn make_unavailable(job: &mut Job, idx: u32) {
    let dependents = job.tasks[idx as usize].dependents.clone();
    for k in dependents {
        let d = &mut job.tasks[k as usize];
        match d.state {
            State::Ready => {
                d.state = State::Waiting;
                d.waiting += 1;
            }
            State::Waiting => d.waiting += 1,
            State::Running(_) | State::Done => {}
        }
    }
}

/// A finished task must run again (its output is lost and still needed).
pub(super) fn reset(job: &mut Job, jid: JobId, idx: u32, ready: &mut VecDeque<(JobId, u32)>) {
    if job.tasks[idx as usize].state != State::Done {
        return;
    }
    job.done -= 1;
    let deps = job.tasks[idx as usize].deps.clone();
    for &d in &deps {
        job.tasks[d as usize].pending_dependents += 1;
    }
    job.tasks[idx as usize].state = State::Waiting;
    requeue(job, jid, idx, ready);
}

/// Puts a task back to wait for its inputs, recomputing lost ones.
pub(super) fn requeue(job: &mut Job, jid: JobId, idx: u32, ready: &mut VecDeque<(JobId, u32)>) {
    job.tasks[idx as usize].state = State::Waiting;
    let deps = job.tasks[idx as usize].deps.clone();
    let mut waiting = 0;
    for &d in &deps {
        if !job.tasks[d as usize].available() {
            waiting += 1;
            if job.tasks[d as usize].state == State::Done {
                reset(job, jid, d, ready);
            }
        }
    }
    let t = &mut job.tasks[idx as usize];
    t.waiting = waiting;
    if waiting == 0 {
        t.state = State::Ready;
        ready.push_back((jid, idx));
    }
}
