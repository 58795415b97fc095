//! A client of a running scheduler: submits a [`Graph`], streams task
//! completions back (with the outputs it asked for), and can cancel. The
//! API is blocking; the client runs its own small runtime. It reaches the
//! scheduler over QUIC ([`Client::connect`]) or, in the scheduler's own
//! process, over channels ([`crate::SchedulerHandle::local_client`]).

use std::sync::Arc;

use anncat_exec::executor::Executor;
use anncat_exec::graph::Graph;
use anncat_exec::protocol::{
    CloseCode, Hello, JobId, PROTOCOL_VERSION, TaskDone, ToClient, ToScheduler, Want,
};
use anncat_net::cluster_file::ClusterFile;
use anncat_net::frame::CONTROL_MAX_BYTES;
use anncat_net::hello::say_hello;
use anncat_net::tls::{client_endpoint, connect, der_of_pem};
use anncat_net::{FrameReader, FrameWriter, NetError, TransportTuning};
use tokio::sync::Mutex;

use crate::error::{Result, SchedulerError};
use crate::local_link::{LocalLink, LocalSender};

/// Tasks per `AddTasks` frame.
const BATCH: usize = 4096;

pub use anncat_exec::executor::JobResult;

impl Executor for Client {
    fn run_job(
        &mut self,
        name: &str,
        graph: &Graph,
        want: Want,
        on_done: &mut (dyn FnMut(&TaskDone) + Send),
    ) -> anncat_exec::Result<JobResult> {
        let job = self.submit(name, graph, want).map_err(job_error)?;
        self.wait(job, on_done).map_err(job_error)
    }
}

/// A cluster's failure as an executor error: the job's own message, or
/// why the scheduler was lost.
fn job_error(e: SchedulerError) -> anncat_exec::Error {
    match e {
        SchedulerError::Lost(why) => {
            anncat_exec::Error::Task(format!("lost the connection to the scheduler ({why})"))
        }
        SchedulerError::Job(message) => anncat_exec::Error::Task(message),
        SchedulerError::Core(e) => e,
        other => anncat_exec::Error::Task(other.to_string()),
    }
}

/// A connection to a scheduler.
pub struct Client {
    rt: tokio::runtime::Runtime,
    sender: Sender,
    link: Link,
}

/// The sending half of a client's link to its scheduler, shared with its
/// cancellers.
#[derive(Clone)]
enum Sender {
    /// The control stream of a QUIC connection.
    Net(Arc<Mutex<FrameWriter>>),
    /// A channel into a scheduler in this process.
    Local(LocalSender),
}

impl Sender {
    /// Sends `msg` to the scheduler.
    async fn send(&self, msg: ToScheduler) -> Result<()> {
        match self {
            Sender::Net(writer) => Ok(writer.lock().await.send(&msg).await?),
            Sender::Local(sender) => sender.send(msg).await,
        }
    }
}

/// How a client hears from its scheduler, and what it closes on leaving.
enum Link {
    /// A QUIC connection.
    Net {
        conn: quinn::Connection,
        reader: FrameReader,
        endpoint: quinn::Endpoint,
    },
    /// Channels into a scheduler in this process.
    Local(LocalLink),
}

impl Link {
    /// The scheduler's next message; `None` when it closed the link.
    async fn next(&mut self) -> Result<Option<ToClient>> {
        match self {
            Link::Net { reader, .. } => Ok(reader.next::<ToClient>().await?),
            Link::Local(link) => Ok(link.next().await),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Client");
        match &self.link {
            Link::Net { conn, .. } => d.field("scheduler", &conn.remote_address()),
            Link::Local(_) => d.field("scheduler", &"in this process"),
        }
        .finish()
    }
}

impl Drop for Client {
    /// Says goodbye: the scheduler sees this client leave at once, not
    /// after its connection times out (a local cluster stopping right
    /// after its run's client would otherwise wait for it). A local link
    /// says it as it drops.
    fn drop(&mut self) {
        let Link::Net { conn, endpoint, .. } = &self.link else {
            return;
        };
        conn.close(CloseCode::Shutdown.code().into(), b"client done");
        // Long enough for the close frame to leave; the draining period
        // after it protects nothing a departing client needs.
        let endpoint = endpoint.clone();
        self.rt.block_on(async move {
            let _ = tokio::time::timeout(CLIENT_CLOSE_FLUSH, endpoint.wait_idle()).await;
        });
    }
}

/// How long a dropped client waits for its close frame to leave.
const CLIENT_CLOSE_FLUSH: std::time::Duration = std::time::Duration::from_millis(5);

/// Cancels a running job from another thread.
#[derive(Clone)]
pub struct Canceller {
    handle: tokio::runtime::Handle,
    sender: Sender,
}

impl std::fmt::Debug for Canceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Canceller")
    }
}

impl Canceller {
    /// Asks the scheduler to cancel `job`.
    pub fn cancel(&self, job: JobId) -> Result<()> {
        self.handle
            .block_on(self.sender.send(ToScheduler::Cancel { job }))
    }
}

impl Client {
    /// Connects to the scheduler of `cluster` and authenticates.
    pub fn connect(cluster: &ClusterFile, tuning: &TransportTuning) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| SchedulerError::system("start a runtime", e))?;
        let cert = der_of_pem(&cluster.certificate)?;
        let hello = Hello::Client {
            version: PROTOCOL_VERSION,
            secret: cluster.secret.clone(),
        };
        let addr = cluster.resolve().map_err(|e| SchedulerError::Unreachable {
            address: cluster.address.clone(),
            reason: e.to_string(),
        })?;
        let (endpoint, conn, writer, reader) = rt
            .block_on(async {
                let endpoint = client_endpoint()?;
                let conn = connect(&endpoint, addr, cluster.host(), &cert, tuning).await?;
                let (_, writer, reader) = say_hello(&conn, &hello, CONTROL_MAX_BYTES).await?;
                Ok::<_, NetError>((endpoint, conn, writer, reader))
            })
            .map_err(|e| match e {
                NetError::Refused(reason) => SchedulerError::Refused {
                    address: cluster.address.clone(),
                    reason,
                },
                other => SchedulerError::Unreachable {
                    address: cluster.address.clone(),
                    reason: other.to_string(),
                },
            })?;
        Ok(Client {
            rt,
            sender: Sender::Net(Arc::new(Mutex::new(writer))),
            link: Link::Net {
                conn,
                reader,
                endpoint,
            },
        })
    }

    /// A client over `link`, into a scheduler in this process. Its runtime
    /// runs on the calling thread only: nothing arrives but through it.
    pub(crate) fn local(link: LocalLink) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SchedulerError::system("start a runtime", e))?;
        Ok(Client {
            rt,
            sender: Sender::Local(link.sender()),
            link: Link::Local(link),
        })
    }

    /// A handle that can cancel jobs while [`Client::wait`] runs.
    pub fn canceller(&self) -> Canceller {
        Canceller {
            handle: self.rt.handle().clone(),
            sender: self.sender.clone(),
        }
    }

    /// The memory limits of the workers connected now (smallest first;
    /// empty when none has joined yet).
    pub fn worker_limits(&mut self) -> Result<Vec<u64>> {
        let (sender, link) = (&self.sender, &mut self.link);
        self.rt.block_on(async move {
            sender.send(ToScheduler::WorkerLimits).await?;
            loop {
                match link.next().await? {
                    Some(ToClient::WorkerLimits(limits)) => return Ok(limits),
                    Some(_) => continue,
                    None => return Err(lost()),
                }
            }
        })
    }

    /// Submits `graph` as a job; returns its id. Outputs in `want` come back.
    pub fn submit(&mut self, name: &str, graph: &Graph, want: Want) -> Result<JobId> {
        graph.validate()?;
        let (sender, link) = (&self.sender, &mut self.link);
        self.rt.block_on(async move {
            sender
                .send(ToScheduler::NewJob {
                    name: name.to_string(),
                })
                .await?;
            let job = loop {
                match link.next().await? {
                    Some(ToClient::JobCreated(job)) => break job,
                    Some(_) => continue,
                    None => return Err(lost()),
                }
            };
            for batch in graph.tasks().chunks(BATCH) {
                sender
                    .send(ToScheduler::AddTasks {
                        job,
                        tasks: batch.to_vec(),
                    })
                    .await?;
            }
            sender.send(ToScheduler::Start { job, want }).await?;
            Ok(job)
        })
    }

    /// Waits for `job` to end, calling `on_done` for every finished task (in
    /// the order they finish). Returns the wanted outputs.
    pub fn wait(&mut self, job: JobId, on_done: &mut dyn FnMut(&TaskDone)) -> Result<JobResult> {
        let link = &mut self.link;
        self.rt.block_on(async move {
            let mut result = JobResult::default();
            loop {
                let msg = link.next().await.map_err(|e| match e {
                    SchedulerError::Net(e) => SchedulerError::Lost(e.to_string()),
                    other => other,
                })?;
                match msg {
                    None => return Err(lost()),
                    Some(ToClient::TasksDone { job: j, done }) if j == job => {
                        for mut d in done {
                            on_done(&d);
                            if let Some(out) = d.output.take() {
                                result.outputs.insert(d.task, out);
                            }
                        }
                    }
                    Some(ToClient::JobFinished { job: j, workers }) if j == job => {
                        result.workers = workers;
                        return Ok(result);
                    }
                    Some(ToClient::JobFailed { job: j, error }) if j == job => {
                        return Err(SchedulerError::Job(error));
                    }
                    Some(_) => {}
                }
            }
        })
    }

    /// Submits `graph` and waits for it: the outputs of its sink tasks.
    pub fn run(&mut self, graph: &Graph) -> Result<JobResult> {
        let job = self.submit("graph", graph, Want::Sinks)?;
        self.wait(job, &mut |_| {})
    }
}

fn lost() -> SchedulerError {
    SchedulerError::Lost("the scheduler closed the connection".into())
}
