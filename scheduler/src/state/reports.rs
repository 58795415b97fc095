//! What workers report: tasks started and finished (or failed), and the
//! end of a job, as functions of [`SchedulerState`].

use super::*;

impl SchedulerState {
    /// A worker started running these tasks (a worker that dies now is
    /// blamed on them).
    /// A task the worker was not given is a protocol violation: the
    /// worker is dropped.
    pub fn on_tasks_started(&mut self, worker: WorkerId, keys: &[TaskKey], comm: &mut dyn Comm) {
        self.mark_given(worker, keys, "started", comm, |w, k| {
            match w.running.get_mut(k) {
                Some((_, started, _)) => *started = true,
                None => return false,
            }
            true
        });
    }

    /// A worker's tasks whose kernels returned: their writes are being made
    /// durable, so they are not done yet, but they no longer hold a task
    /// thread or memory (the worker may take more work meanwhile).
    pub fn on_tasks_computed(&mut self, worker: WorkerId, keys: &[TaskKey], comm: &mut dyn Comm) {
        self.mark_given(worker, keys, "computed", comm, |w, k| {
            match w.running.get_mut(k) {
                Some((mem, _, _)) if !w.computed.contains(k) => *mem = 0,
                _ => return false,
            }
            w.computed.insert(*k)
        });
    }

    /// Applies `mark` to each of `keys` on `worker`'s books; a key it was
    /// not given, or that `mark` refuses (said twice), is a protocol
    /// violation ("it {what} ...").
    fn mark_given(
        &mut self,
        worker: WorkerId,
        keys: &[TaskKey],
        what: &str,
        comm: &mut dyn Comm,
        mut mark: impl FnMut(&mut Worker, &TaskKey) -> bool,
    ) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if let Some(k) = keys.iter().find(|k| !mark(w, k)) {
            let what = format!("it {what} {k}, which it was not given (or said so twice)");
            self.protocol_violation(worker, &what, comm);
        }
    }

    /// Drops a worker that broke the protocol; its work is redone elsewhere.
    pub(super) fn protocol_violation(&mut self, worker: WorkerId, what: &str, comm: &mut dyn Comm) {
        if !self.workers.contains_key(&worker) {
            return;
        }
        let reason = format!("protocol violation: {what}");
        comm.drop_worker(worker, &reason);
        self.on_worker_lost(worker, &reason, comm);
    }

    /// A worker reported finished or failed tasks.
    pub fn on_task_reports(
        &mut self,
        worker: WorkerId,
        reports: Vec<TaskReport>,
        comm: &mut dyn Comm,
    ) {
        for report in reports {
            let key = report.key;
            let given = self
                .workers
                .get(&worker)
                .map(|w| w.running.contains_key(&key));
            match given {
                Some(true) => self.on_task_report(worker, report, comm),
                Some(false) => {
                    let what =
                        format!("it reported {key}, which it was not given (or reported twice)");
                    return self.protocol_violation(worker, &what, comm);
                }
                None => return,
            }
        }
    }

    pub(super) fn on_task_report(
        &mut self,
        wid: WorkerId,
        report: TaskReport,
        comm: &mut dyn Comm,
    ) {
        let key = report.key;
        let Some(w) = self.workers.get_mut(&wid) else {
            return;
        };
        if w.running.remove(&key).is_none() {
            return;
        }
        w.computed.remove(&key);
        let done = matches!(report.outcome, TaskOutcome::Done { .. });
        if done {
            let took = (report.stats.end_s - report.stats.start_s).max(0.0);
            w.avg_task_s = 0.8 * w.avg_task_s + 0.2 * took;
        }
        let job_alive = self
            .jobs
            .get(&key.job)
            .and_then(|j| index_of(j, key.task))
            .is_some();
        if !job_alive {
            if done {
                self.releases.entry(wid).or_default().push(key);
            }
            return;
        }
        let job = self.jobs.get_mut(&key.job).expect("alive");
        let idx = index_of(job, key.task).expect("alive");
        if job.tasks[idx as usize].state != State::Running(wid) {
            return;
        }
        match report.outcome {
            TaskOutcome::Done { output } => {
                let t = &mut job.tasks[idx as usize];
                t.state = State::Done;
                t.output_bytes = report.stats.output_bytes;
                let keep = t.pending_dependents > 0;
                if keep {
                    t.holders.push(wid);
                    w.holds.insert(key);
                }
                job.done += 1;
                job.finished_batch.push(TaskDone {
                    task: key.task,
                    worker: wid,
                    stats: report.stats,
                    output,
                });
                let deps = job.tasks[idx as usize].deps.clone();
                for d in deps {
                    let dep = &mut job.tasks[d as usize];
                    dep.pending_dependents -= 1;
                    if dep.pending_dependents == 0 && !dep.holders.is_empty() {
                        let dkey = TaskKey {
                            job: key.job,
                            task: dep.spec.id,
                        };
                        for h in std::mem::take(&mut dep.holders) {
                            if let Some(hw) = self.workers.get_mut(&h) {
                                hw.holds.remove(&dkey);
                            }
                            self.releases.entry(h).or_default().push(dkey);
                        }
                    }
                }
                let dependents = job.tasks[idx as usize].dependents.clone();
                for k in dependents {
                    let dt = &mut job.tasks[k as usize];
                    if dt.state == State::Waiting {
                        dt.waiting -= 1;
                        if dt.waiting == 0 {
                            dt.state = State::Ready;
                            self.ready.push_back((key.job, k));
                        }
                    }
                }
                if job.done == job.tasks.len() {
                    self.finish_job(key.job, comm);
                }
            }
            TaskOutcome::Failed { kind, message } => match kind {
                FailureKind::InputLost => {
                    let t = &mut job.tasks[idx as usize];
                    t.input_retries += 1;
                    if t.input_retries > 20 {
                        let error = format!(
                            "task {} ({}): inputs could not be fetched 20 times; last: {message}",
                            key.task, t.spec.label
                        );
                        self.fail_job(key.job, error, comm);
                    } else {
                        requeue(job, key.job, idx, &mut self.ready);
                    }
                }
                FailureKind::Error | FailureKind::OutOfMemory => {
                    self.fail_job(key.job, message, comm);
                }
            },
        }
    }

    pub(super) fn finish_job(&mut self, job: JobId, comm: &mut dyn Comm) {
        let Some(mut j) = self.jobs.remove(&job) else {
            return;
        };
        if !j.finished_batch.is_empty() {
            comm.to_client(
                j.client,
                ToClient::TasksDone {
                    job,
                    done: std::mem::take(&mut j.finished_batch),
                },
            );
        }
        let mut workers: Vec<WorkerSummary> = j
            .participants
            .iter()
            .filter_map(|id| self.workers.get(id).map(|w| w.summary(*id, false)))
            .collect();
        workers.extend(j.lost);
        comm.to_client(j.client, ToClient::JobFinished { job, workers });
    }

    pub(super) fn fail_job(&mut self, job: JobId, error: String, comm: &mut dyn Comm) {
        let Some(j) = self.jobs.remove(&job) else {
            return;
        };
        for t in &j.tasks {
            let key = TaskKey {
                job,
                task: t.spec.id,
            };
            for h in &t.holders {
                if let Some(w) = self.workers.get_mut(h) {
                    w.holds.remove(&key);
                }
                self.releases.entry(*h).or_default().push(key);
            }
        }
        self.ready.retain(|(jid, _)| *jid != job);
        // Assignments of this pass not sent yet: the worker never hears of
        // them, so its books must not hold them either.
        let workers = &mut self.workers;
        for (wid, runs) in &mut self.runs {
            runs.retain(|a| {
                if a.key.job != job {
                    return true;
                }
                if let Some(w) = workers.get_mut(wid)
                    && w.running.remove(&a.key).is_some()
                {
                    w.computed.remove(&a.key);
                }
                false
            });
        }
        comm.to_client(j.client, ToClient::JobFailed { job, error });
    }
}
