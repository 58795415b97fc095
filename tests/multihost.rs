//! Multi-host tests on one machine: network namespaces joined by a bridge
//! hold a scheduler host and three worker hosts, each with its own address
//! (10.213.0.1 to .4), sharing the filesystem as a cluster's nodes share
//! theirs. A concat across them must equal the single-machine result, also
//! when one worker host's link goes down mid-run; when the link comes back
//! the worker joins again and takes work. Then 20 ms of latency each way
//! (`tc netem` where the kernel has it, else a delaying UDP relay in front
//! of the scheduler) and the slowdown is printed.
//!
//! Needs root and `ip` (iproute2). Where the kernel forbids network
//! namespaces the test says so and does nothing else. Every process and
//! namespace it makes is removed when it ends, pass or fail.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::assert_same_tree;
use common::procs::{
    BIN, Procs, concat_args, journal_len, log, lost_workers, reference, report, wait_for,
};

/// The hosts: the scheduler's (where the client runs too), then the workers'.
const HOSTS: [&str; 4] = ["s", "w1", "w2", "w3"];

/// An extra address of the scheduler host, where the latency relay listens.
const RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 100);

/// Added latency, each way.
const LATENCY: Duration = Duration::from_millis(20);

/// Network namespaces `PREFIX-HOST` plus a switch namespace holding a
/// bridge; removed (with their links) when dropped.
struct Net {
    prefix: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Makes the namespaces and links; an error when the kernel (or the
    /// sandbox) forbids network namespaces.
    fn create() -> Result<Net, String> {
        let prefix = format!("anc{}", std::process::id() % 100_000);
        let net = Net { prefix };
        let sw = net.ns("sw");
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for (i, host) in HOSTS.iter().enumerate() {
            let ns = net.ns(host);
            ip(&["netns", "add", &ns])?;
            // veth names are global until moved: make them unique.
            let (inside, outside) = (
                format!("{}{host}i", net.prefix),
                format!("{}{host}o", net.prefix),
            );
            ip(&[
                "link", "add", &inside, "type", "veth", "peer", "name", &outside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["link", "set", &outside, "netns", &sw])?;
            ip(&["-n", &ns, "link", "set", &inside, "name", "eth0"])?;
            ip(&["-n", &sw, "link", "set", &outside, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &outside, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", host_ip(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// `program` run on `host`.
    fn command(&self, host: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host), program]);
        c
    }

    /// Brings `host`'s link up or down.
    fn link(&self, host: &str, up: bool) {
        ip(&[
            "-n",
            &self.ns(host),
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ])
        .expect("link");
    }

    /// Adds `delay` to everything `host` sends (netem); an error where the
    /// kernel has no netem.
    fn netem(&self, host: &str, delay: Duration) -> Result<(), String> {
        let ms = format!("{}ms", delay.as_millis());
        let ns = self.ns(host);
        ip(&[
            "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay",
            &ms,
        ])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in HOSTS.iter().chain(["sw"].iter()) {
            let _ = ip(&["netns", "del", &self.ns(host)]);
        }
    }
}

fn host_ip(i: usize) -> String {
    format!("10.213.0.{}", i + 1)
}

/// A UDP relay on the scheduler host that holds every datagram for
/// [`LATENCY`] in each direction: clients dial it instead of the scheduler.
struct Relay {
    stop: Arc<AtomicBool>,
    port: u16,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

type Delayed = (Instant, Arc<UdpSocket>, Option<SocketAddr>, Vec<u8>);

#[allow(unsafe_code)]
fn enter_netns(ns: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
    // SAFETY: setns on the calling thread with a valid namespace fd; it
    // moves only this thread (and the sockets it makes) into the namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

fn start_relay(ns: String, upstream: SocketAddr) -> Relay {
    let stop = Arc::new(AtomicBool::new(false));
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (delay_tx, delay_rx) = std::sync::mpsc::channel::<Delayed>();
    let mut threads = Vec::new();
    let s = stop.clone();
    threads.push(std::thread::spawn(move || {
        // The delay line: constant delay, so first in is first due.
        while !s.load(Ordering::Relaxed) {
            let Ok((due, sock, dest, data)) = delay_rx.recv_timeout(Duration::from_millis(50))
            else {
                continue;
            };
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let _ = match dest {
                Some(d) => sock.send_to(&data, d),
                None => sock.send(&data),
            };
        }
    }));
    let s = stop.clone();
    threads.push(std::thread::spawn(move || {
        enter_netns(&ns);
        let listen = Arc::new(UdpSocket::bind((RELAY_IP, 0)).expect("relay bind"));
        listen
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        port_tx
            .send(listen.local_addr().expect("addr").port())
            .expect("port");
        let mut upstreams: std::collections::HashMap<SocketAddr, Arc<UdpSocket>> =
            std::collections::HashMap::new();
        let mut readers = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !s.load(Ordering::Relaxed) {
            let Ok((n, from)) = listen.recv_from(&mut buf) else {
                continue;
            };
            let up = upstreams.entry(from).or_insert_with(|| {
                let up = UdpSocket::bind((RELAY_IP, 0)).expect("upstream bind");
                up.connect(upstream).expect("connect");
                up.set_read_timeout(Some(Duration::from_millis(50)))
                    .expect("timeout");
                let up = Arc::new(up);
                let (up2, listen2, s2, tx2) =
                    (up.clone(), listen.clone(), s.clone(), delay_tx.clone());
                readers.push(std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !s2.load(Ordering::Relaxed) {
                        if let Ok(n) = up2.recv(&mut buf) {
                            let due = Instant::now() + LATENCY;
                            let _ = tx2.send((due, listen2.clone(), Some(from), buf[..n].to_vec()));
                        }
                    }
                }));
                up
            });
            let due = Instant::now() + LATENCY;
            let _ = delay_tx.send((due, up.clone(), None, buf[..n].to_vec()));
        }
        for r in readers {
            let _ = r.join();
        }
    }));
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("relay port");
    Relay {
        stop,
        port,
        threads,
    }
}

/// A cluster of a scheduler on host `s` and workers on the others.
struct Cluster<'a> {
    net: &'a Net,
    dir: PathBuf,
    procs: Procs,
    cluster_file: PathBuf,
    workers: Vec<(usize, PathBuf)>,
}

impl<'a> Cluster<'a> {
    fn start_scheduler(net: &'a Net, dir: &Path) -> Cluster<'a> {
        let mut procs = Procs::default();
        let cluster_file = dir.join("cluster.json");
        let (err, _) = log(dir, "scheduler");
        let listen = format!("{}:0", host_ip(0));
        procs.add(
            net.command("s", BIN)
                .args(["scheduler", "--listen", &listen, "--advertise", &host_ip(0)])
                .args(["--advertise", &RELAY_IP.to_string(), "--cluster-file"])
                .arg(&cluster_file)
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .expect("scheduler"),
        );
        wait_for("the cluster file", Duration::from_secs(20), || {
            cluster_file.is_file()
        });
        Cluster {
            net,
            dir: dir.to_path_buf(),
            procs,
            cluster_file,
            workers: Vec::new(),
        }
    }

    /// Starts a worker on each worker host, dialling the scheduler through
    /// `cluster_file`.
    fn start_workers(&mut self, cluster_file: &Path, tag: &str) {
        for (i, host) in HOSTS.iter().enumerate().skip(1) {
            let (err, log_path) = log(&self.dir, &format!("worker-{host}-{tag}"));
            let listen = format!("{}:0", host_ip(i));
            let idx = self.procs.add(
                self.net
                    .command(host, BIN)
                    .args(["worker", "--memory-limit", "256MiB", "--listen", &listen])
                    .args(["--reconnect-timeout", "120", "--cluster-file"])
                    .arg(cluster_file)
                    .arg("--allow-write")
                    .arg(&self.dir)
                    .env("ANNCAT_TEST_TASK_DELAY_MS", "15")
                    .stdout(Stdio::null())
                    .stderr(err)
                    .spawn()
                    .expect("worker"),
            );
            self.workers.push((idx, log_path));
        }
    }

    fn stop_workers(&mut self) {
        for (idx, _) in self.workers.drain(..) {
            let _ = self.procs.0[idx].kill();
            let _ = self.procs.0[idx].wait();
        }
    }

    /// Starts `anncat concat` on the scheduler host.
    fn spawn_concat(&mut self, name: &str, cluster_file: &Path) -> (usize, PathBuf, PathBuf) {
        let out = self.dir.join(format!("{name}.zarr"));
        let rep = self.dir.join(format!("{name}.json"));
        let (err, _) = log(&self.dir, name);
        let cf = cluster_file.to_string_lossy().into_owned();
        let rp = rep.to_string_lossy().into_owned();
        let idx = self.procs.add(
            self.net
                .command("s", BIN)
                .args(concat_args(&out, &["--cluster-file", &cf, "--report", &rp]))
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .expect("concat"),
        );
        (idx, out, rep)
    }

    /// Waits for a concat; its wall time and report, after checking it
    /// succeeded with output identical to `reference`.
    fn finish(
        &mut self,
        name: &str,
        idx: usize,
        out: &Path,
        rep: &Path,
        reference: &Path,
    ) -> (f64, serde_json::Value) {
        let status = self.procs.0[idx].wait().expect("wait");
        let stderr =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        assert!(status.success(), "{name}: concat failed: {stderr}");
        assert_same_tree(out, reference);
        let r = report(rep);
        (r["wall_s"].as_f64().expect("wall_s"), r)
    }

    fn run(
        &mut self,
        name: &str,
        cluster_file: &Path,
        reference: &Path,
    ) -> (f64, serde_json::Value) {
        let (idx, out, rep) = self.spawn_concat(name, cluster_file);
        self.finish(name, idx, &out, &rep, reference)
    }
}

/// Hosts (by address) that ran tasks in a report.
fn hosts_that_worked(r: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let names: std::collections::HashMap<u64, String> = r["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| {
            let name = w["name"].as_str().unwrap_or("");
            let host = name.split(':').next().unwrap_or("").to_string();
            (w["id"].as_u64().expect("id"), host)
        })
        .collect();
    r["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| names.get(&t["worker"].as_u64()?).cloned())
        .collect()
}

#[test]
fn a_concat_across_hosts_survives_a_cut_link_and_latency() {
    let net = match Net::create() {
        Ok(net) => net,
        Err(reason) => {
            eprintln!(
                "SKIPPED: cannot make network namespaces here (needs root, iproute2 and a kernel that allows them): {reason}"
            );
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tmp");
    let (reference, tasks) = reference(dir.path());
    let mut c = Cluster::start_scheduler(&net, dir.path());
    let cluster_file = c.cluster_file.clone();
    c.start_workers(&cluster_file, "a");

    // 1. Across the hosts, as on one machine.
    let (t_plain, r) = c.run("plain", &cluster_file, &reference);
    eprintln!("{tasks} tasks across 3 worker hosts: {t_plain:.2} s");
    let all: Vec<String> = (1..4).map(host_ip).collect();
    assert!(
        hosts_that_worked(&r).len() >= 2,
        "work spread over the hosts: {:?}",
        hosts_that_worked(&r)
    );

    // 2. w3's link goes down mid-run: the others finish the job.
    let (idx, out, rep) = c.spawn_concat("cut", &cluster_file);
    wait_for("progress", Duration::from_secs(60), || {
        journal_len(&out) > 1500
    });
    net.link("w3", false);
    let (_, r) = c.finish("cut", idx, &out, &rep, &reference);
    let lost = lost_workers(&r);
    assert_eq!(lost.len(), 1, "the cut-off worker is reported lost: {r}");
    assert!(
        lost[0]["name"]
            .as_str()
            .unwrap_or("")
            .starts_with(&host_ip(3)),
        "{}",
        lost[0]
    );

    // 3. The link comes back: the worker joins again and takes work.
    net.link("w3", true);
    let w3_log = c.workers[2].1.clone();
    wait_for("w3 to join again", Duration::from_secs(60), || {
        std::fs::read_to_string(&w3_log).is_ok_and(|l| l.contains("joined the scheduler again"))
    });
    let (_, r) = c.run("rejoined", &cluster_file, &reference);
    assert!(
        hosts_that_worked(&r).contains(&host_ip(3)),
        "the rejoined worker ran tasks: {:?} of {all:?}",
        hosts_that_worked(&r)
    );

    // 4. 20 ms each way.
    let netem: Result<(), String> = HOSTS.iter().try_for_each(|h| net.netem(h, LATENCY));
    let (how, t_slow) = match netem {
        Ok(()) => {
            let (t, _) = c.run("latency", &cluster_file, &reference);
            ("tc netem on every host", t)
        }
        Err(why) => {
            // No netem in this kernel: delay the scheduler link in user space.
            ip(&[
                "-n",
                &net.ns("s"),
                "addr",
                "add",
                &format!("{RELAY_IP}/24"),
                "dev",
                "eth0",
            ])
            .expect("relay address");
            let cluster: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&cluster_file).expect("cluster"))
                    .expect("json");
            let port: u16 = cluster["address"]
                .as_str()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .expect("port");
            let relay = start_relay(net.ns("s"), SocketAddr::from(([10, 213, 0, 1], port)));
            let mut via = cluster.clone();
            via["address"] = format!("{RELAY_IP}:{}", relay.port).into();
            let via_file = dir.path().join("cluster-via-relay.json");
            std::fs::write(&via_file, via.to_string()).expect("write");
            c.stop_workers();
            c.start_workers(&via_file, "b");
            let (t, r) = c.run("latency", &via_file, &reference);
            assert_eq!(
                hosts_that_worked(&r).len(),
                3,
                "all three hosts worked through the relay"
            );
            drop(relay);
            eprintln!("(no netem here: {why})");
            (
                "a delaying UDP relay on the scheduler link (peer links undelayed)",
                t,
            )
        }
    };
    eprintln!(
        "latency {} ms each way via {how}: {t_slow:.2} s vs {t_plain:.2} s without ({:.2}x)",
        LATENCY.as_millis(),
        t_slow / t_plain.max(1e-9)
    );
    c.stop_workers();
}
