"""Runs the cluster set-ups in cluster-configs/ on this machine, with no Slurm,
Kubernetes or Docker: the exact commands the files contain, against a real
anncat scheduler and workers on loopback.

- Slurm: cluster-configs/slurm/anncat.sbatch itself, run by bash with fake
  `srun`, `scontrol` and `hostname` on PATH (srun runs its command once per
  fake node, with the node's SLURMD_NODENAME, and takes SIGTERM and SIGINT
  as srun does; the fake node names resolve to 127.0.0.1 in a network
  namespace of the test), and the environment Slurm gives a batch script of
  a 3-node job. tests/slurm/run.sh runs it under a real one-node Slurm.
- Kubernetes: every container of the manifests run as its pod would run it:
  command + args with Kubernetes' $(VAR) expansion from the declared env
  (POD_IP=127.0.0.1), as the pod's runAsUser/runAsGroup/fsGroup, with the
  Secret (made by the README's `anncat keygen` and `kubectl create secret`
  commands) and the PVC materialized as directories, in a network namespace
  where `anncat-scheduler` resolves to 127.0.0.1.
- Compose: the services' entrypoint + command, interpolated as compose does,
  volumes as directories, the scheduler's healthcheck before the workers.
- local.toml: complete against `anncat <sub> --help`, defaults as documented,
  and runs (concat, convert, scheduler + worker) with `anncat --config`.

Every output is compared with `anncat concat` of the README example on its
default local cluster (anndata.read_zarr + assert_equal). Every process a
test starts is stopped by its pid at the end, also when the test fails.

Needs root (network namespaces, running pods as their uid) and `ip`, `setpriv`.
ANNCAT_BIN names the binary (default: target/release/anncat).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import psutil
import pytest
import yaml
from anndata.tests.helpers import assert_equal

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "cluster-configs"
README = CONFIGS / "README.md"
SBATCH = CONFIGS / "slurm" / "anncat.sbatch"
K8S = CONFIGS / "kubernetes"
COMPOSE = CONFIGS / "compose" / "compose.yaml"
DOCKERFILE = CONFIGS / "Dockerfile"
LOCAL_TOML = CONFIGS / "local.toml"
SUBCOMMANDS = ["concat", "convert", "scheduler", "worker", "keygen", "inspect"]
TIMEOUT = 300  # seconds for any one run

# ---------------------------------------------------------------- helpers


def anncat_bin() -> Path:
    path = Path(os.environ.get("ANNCAT_BIN", REPO / "target" / "release" / "anncat")).resolve()
    if not path.is_file():
        pytest.fail(f"anncat binary not found at {path}: build it (cargo build --release) or set ANNCAT_BIN")
    return path


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """A directory holding `anncat` (a link to ANNCAT_BIN), for PATH."""
    d = Path(tempfile.mkdtemp(prefix="anncat-bin-"))
    d.chmod(0o755)
    (d / "anncat").symlink_to(anncat_bin())
    yield d
    shutil.rmtree(d, ignore_errors=True)


def clean_env(bin_dir: Path, **extra) -> dict:
    """The test's environment without ANNCAT_* and SLURM_* variables, with
    `anncat` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANNCAT_", "SLURM_", "SLURMD_"))}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


def check_run(argv, env, **kw) -> subprocess.CompletedProcess:
    """Runs a command to completion (in its own session); fails the test if
    it fails or leaves a process of its session running (e.g. the workers of
    `anncat concat`'s local cluster)."""
    argv = list(map(str, argv))
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_pids([p.pid, *(c.pid for c in _children(p.pid))])
        out, err = p.communicate()
        pytest.fail(f"{shlex.join(argv)} did not finish within {TIMEOUT}s:\n{out}\n{err}")
    finally:
        left = kill_pids(session_pids(p.pid))
    if p.returncode != 0:
        pytest.fail(f"{shlex.join(argv)} failed ({p.returncode}):\n{out}\n{err}")
    assert not left, f"{shlex.join(argv)} left processes running: {left}"
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def session_pids(sid: int) -> set[int]:
    """Live processes of session `sid` (a process started with
    start_new_session and everything it started)."""
    return {q.pid for q in psutil.process_iter() if _sid(q) == sid}


def _sid(proc: psutil.Process) -> int | None:
    try:
        return os.getsid(proc.pid)
    except OSError:
        return None


def assert_same_store(got: Path, want: Path):
    assert got.is_dir(), f"no output store at {got}"
    assert not Path(f"{got}.partial").exists(), f"{got}.partial left behind"
    assert_equal(ad.read_zarr(got), ad.read_zarr(want))


def parse_size(text: str) -> int:
    """anncat sizes (512MiB, 2GiB, bytes) and Kubernetes quantities (4Gi, 4G)."""
    m = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]*)", str(text).strip())
    units = {"": 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    assert m and m.group(2) in units, f"not a size: {text!r}"
    return int(float(m.group(1)) * units[m.group(2)])


def docker_size(text: str) -> int:
    """Docker's memory sizes (b, k, m, g: binary units)."""
    m = re.fullmatch(r"([0-9.]+)([bkmg]?)", str(text).strip().lower())
    assert m, f"not a docker size: {text!r}"
    return int(float(m.group(1)) * {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2)])


# ------------------------------------------------------- the anncat CLI


HELP_OPTION = re.compile(r"^\s+(?:-[A-Za-z], )?--([a-z0-9][a-z0-9-]*)\b(.*)$")


def help_options(sub: str, env) -> dict[str, dict]:
    """Long options of `anncat SUB --help` (without --help and the global
    --config): name -> {"default": the [default: ...] value or None}."""
    text = check_run(["anncat", sub, "--help"], env).stdout
    options, last = {}, None
    for line in text.splitlines():
        m = HELP_OPTION.match(line)
        if m:
            last = options[m.group(1)] = {"help": m.group(2)}
        elif last is not None and line.strip():
            last["help"] += " " + line.strip()  # clap's long layout: help on the next lines
        else:
            last = None
    for opt in options.values():
        d = re.search(r"\[default: ([^\]]*)\]", opt["help"])
        opt["default"] = d.group(1) if d else None
    for name in ("help", "version", "config"):
        options.pop(name, None)
    assert options, f"no options found in `anncat {sub} --help`:\n{text}"
    return options


@pytest.fixture(scope="session")
def cli(bin_dir) -> dict[str, dict]:
    env = clean_env(bin_dir)
    return {sub: help_options(sub, env) for sub in SUBCOMMANDS}


def anncat_invocations(tokens: list[str]) -> list[tuple[str, list[str]]]:
    """(subcommand, its arguments) for every `anncat SUB ...` in a token list."""
    found = []
    for i, tok in enumerate(tokens):
        if Path(tok).name == "anncat" and i + 1 < len(tokens) and tokens[i + 1] in SUBCOMMANDS:
            found.append((tokens[i + 1], tokens[i + 2:]))
    return found


def check_flags(where: str, sub: str, args: list[str], cli: dict):
    known = cli[sub]
    for arg in args:
        if arg in ("&&", "||", ";", "|", "&"):
            break
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            assert name in known, f"{where}: `anncat {sub}` has no option --{name} (anncat {sub} --help: {sorted(known)})"


# ----------------------------------------------------------- processes


class Procs:
    """Processes a test started; stop() ends each of them (and anything it
    started) by pid."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name, argv, env, cwd=None, netns=None, user=None) -> subprocess.Popen:
        argv = list(map(str, argv))
        if user is not None:
            if shutil.which("setpriv") is None:
                pytest.fail("setpriv (util-linux) is needed to run containers' commands as their uid")
            uid, gid, groups = user
            argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}",
                    f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups", "--", *argv]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        log = open(self.logdir / f"{name}.log", "wb")
        p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append((name, p))
        return p

    def log(self, name) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {name} (pid {p.pid}, exit {p.poll()}):\n{self.log(name)[-4000:]}"
                         for name, p in self.procs)

    def wait(self, name, p, timeout=TIMEOUT) -> int:
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} did not finish within {timeout}s\n{self.logs()}")

    def stop(self) -> list[str]:
        """Stops everything still running; returns descriptions of what was."""
        pids = set()
        for _, p in self.procs:
            if p.poll() is None:
                pids.add(p.pid)
            pids.update(c.pid for c in _children(p.pid))
            pids.update(session_pids(p.pid))  # each was started in its own session
        return kill_pids(pids)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def alive(pid: int) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc
    except psutil.Error:
        return None


def kill_pids(pids) -> list[str]:
    """SIGTERM, then SIGKILL after 10 s, by pid; returns what was alive."""
    left = {}
    for pid in pids:  # all of them first: signalling one may end others
        proc = alive(pid)
        if proc is not None:
            try:
                left[pid] = f"{pid}: {' '.join(proc.cmdline())}"
            except psutil.Error:
                pass
    for pid in left:
        proc = alive(pid)
        if proc is not None:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(pid) for pid in left):
        time.sleep(0.1)
    for pid in left:
        proc = alive(pid)
        if proc is not None:
            try:
                proc.kill()
            except psutil.Error:
                pass
    return sorted(left.values())


@pytest.fixture
def procs(tmp_path):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    p = Procs(logdir)
    try:
        yield p
    finally:
        p.stop()


@contextmanager
def netns(hosts: list[str]):
    """A network namespace with lo up, where `hosts` resolve to 127.0.0.1
    (via /etc/netns/NAME/hosts, which `ip netns exec` mounts over /etc/hosts)."""
    if shutil.which("ip") is None:
        pytest.fail("`ip` (iproute2) is needed for network namespaces")
    name = f"anncat-test-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail(f"cannot create a network namespace (`ip netns add {name}`, needs root): {made.stderr.strip()}")
    etc_root = Path("/etc/netns")
    etc_root_made = not etc_root.exists()
    etc = etc_root / name
    try:
        etc.mkdir(parents=True)
        (etc / "hosts").write_text("127.0.0.1 localhost " + " ".join(hosts) + "\n::1 localhost\n")
        up = subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                            capture_output=True, text=True)
        if up.returncode != 0:
            pytest.fail(f"cannot bring lo up in network namespace {name}: {up.stderr.strip()}")
        yield name
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        if etc_root_made:
            try:
                etc_root.rmdir()
            except OSError:
                pass
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# ------------------------------------------------------- the reference


def readme_example() -> list[str]:
    """The concat options of the repository README's first command, with
    absolute input paths and without -o/--overwrite."""
    text = (REPO / "README.md").read_text()
    line = next(l.strip() for l in text.splitlines() if "cargo run --release -- concat" in l)
    command = next(part for part in line.split("&&") if "cargo run --release -- concat" in part)
    tokens = shlex.split(command)[4:]
    assert tokens[0] == "concat"
    out, i = [], 1
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("-o", "--output"):
            i += 2
            continue
        if tok == "--overwrite":
            i += 1
            continue
        key, _, path = tok.partition("=")
        if path and (REPO / path).exists():
            tok = f"{key}={REPO / path}"
        out.append(tok)
        i += 1
    return out


@pytest.fixture(scope="session")
def reference(bin_dir, tmp_path_factory) -> Path:
    """The README example made by `anncat concat` on its default local cluster."""
    out = tmp_path_factory.mktemp("reference") / "reference.zarr"
    check_run(["anncat", "concat", *readme_example(), "-o", out, "--quiet"], clean_env(bin_dir))
    return out


# ================================================================ Slurm

FAKE_SRUN = r'''#!PYTHON
"""Fake srun for tests: runs its command once per task on fake nodes (all on
this machine), with the environment Slurm gives tasks; logs every pid to
$FAKE_SLURM_LOG. Signals as srun (22.05) takes them: SIGTERM cancels the
step (the tasks are killed, "forcing job termination"); SIGINT reaches the
tasks only with --disable-status (else the first one prints a status line
and a second within a second cancels the step)."""
import os, re, signal, subprocess, sys, time

def expand(hostlist):
    names = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", hostlist):
        m = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", part)
        if not m:
            names.append(part)
            continue
        head, ranges, tail = m.groups()
        for r in ranges.split(","):
            lo, _, hi = r.partition("-")
            for n in range(int(lo), int(hi or lo) + 1):
                for rest in expand(tail) if tail else [""]:
                    names.append(f"{head}{str(n).zfill(len(lo))}{rest}")
    return names

WITH_VALUE = {"-N": "nodes", "--nodes": "nodes", "-n": "ntasks", "--ntasks": "ntasks",
              "--ntasks-per-node": "ntasks-per-node", "-w": "nodelist", "--nodelist": "nodelist",
              "-c": "cpus-per-task", "--cpus-per-task": "cpus-per-task", "--mem": "mem",
              "-J": "job-name", "--job-name": "job-name", "--export": "export", "-o": "output",
              "--output": "output", "-e": "error", "--error": "error", "--cpu-bind": "cpu-bind",
              "--kill-on-bad-exit": "kill-on-bad-exit", "-K": "kill-on-bad-exit"}
FLAGS = {"--overlap", "--exact", "--label", "-l", "--exclusive", "--unbuffered", "-u", "--quiet", "-Q",
         "--disable-status", "-X"}

def fail(msg):
    print(f"srun: error: {msg}", file=sys.stderr)
    sys.exit(1)

args, opts = sys.argv[1:], {}
while args and args[0].startswith("-"):
    a = args.pop(0)
    if a == "--":
        break
    name, eq, value = a.partition("=")
    if a in FLAGS:
        opts[a.lstrip("-")] = True
    elif name in WITH_VALUE and name.startswith("--") and eq:
        opts[WITH_VALUE[name]] = value
    elif a in WITH_VALUE:
        if not args:
            fail(f"option {a} needs a value")
        opts[WITH_VALUE[a]] = args.pop(0)
    elif a[:2] in WITH_VALUE and not a.startswith("--") and len(a) > 2:
        opts[WITH_VALUE[a[:2]]] = a[2:]
    else:
        fail(f"unrecognized option '{a}'")
if not args:
    fail("no command given")
job_nodes = expand(os.environ["SLURM_JOB_NODELIST"])
nodes = expand(opts["nodelist"]) if "nodelist" in opts else job_nodes
for n in nodes:
    if n not in job_nodes:
        fail(f"node {n} is not in the job's allocation {job_nodes}")
if "nodes" in opts:
    want = int(opts["nodes"])
    if want > len(job_nodes) or (("nodelist" in opts) and want < len(nodes)):
        fail(f"--nodes={want} does not fit the allocation / --nodelist")
    rest = [n for n in job_nodes if n not in nodes]
    nodes = (nodes + rest)[:want]
per_node = int(opts.get("ntasks-per-node", 0))
ntasks = int(opts["ntasks"]) if "ntasks" in opts else (per_node or 1) * len(nodes)
if per_node:
    placement = [n for n in nodes for _ in range(per_node)][:ntasks]
else:
    placement = [nodes[i % len(nodes)] for i in range(ntasks)]
if len(placement) < ntasks:
    fail(f"{ntasks} tasks do not fit {len(nodes)} node(s) with --ntasks-per-node={per_node}")
log = open(os.environ["FAKE_SLURM_LOG"], "a")
log.write(f"srun {os.getpid()} nodes={','.join(nodes)} tasks={ntasks} argv={args!r} opts={opts!r}\n")
log.flush()
step = int(os.environ.get("FAKE_SLURM_STEP", "0"))
tasks = []
for rank, node in enumerate(placement):
    env = dict(os.environ)
    env.update(SLURMD_NODENAME=node, SLURM_NODEID=str(nodes.index(node)), SLURM_PROCID=str(rank),
               SLURM_LOCALID=str(placement[:rank].count(node)), SLURM_STEP_NUM_NODES=str(len(nodes)),
               SLURM_STEP_NODELIST=",".join(nodes), SLURM_STEP_NUM_TASKS=str(ntasks),
               SLURM_NTASKS=str(ntasks), SLURM_NNODES=str(len(nodes)), SLURM_STEPID=str(step),
               SLURM_STEP_ID=str(step))
    p = subprocess.Popen(args, env=env)
    log.write(f"task {p.pid} node={node} rank={rank} srun={os.getpid()}\n")
    log.flush()
    tasks.append(p)

def cancel_step():
    print("srun: forcing job termination", file=sys.stderr, flush=True)
    for p in tasks:
        if p.poll() is None:
            p.kill()

last_interrupt = [0.0]

def on_interrupt(_sig, _frame):
    if opts.get("disable-status"):
        for p in tasks:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
    elif time.monotonic() - last_interrupt[0] < 1:
        cancel_step()
    else:
        last_interrupt[0] = time.monotonic()
        print("srun: interrupt (one more within 1 sec to abort)", file=sys.stderr, flush=True)

signal.signal(signal.SIGTERM, lambda _sig, _frame: cancel_step())
signal.signal(signal.SIGINT, on_interrupt)
codes = [p.wait() for p in tasks]
for rank, (node, p) in enumerate(zip(placement, tasks)):
    if p.returncode < 0:
        print(f"srun: error: {node}: task {rank}: {signal.strsignal(-p.returncode)}", file=sys.stderr)
    elif p.returncode > 0:
        print(f"srun: error: {node}: task {rank}: Exited with exit code {p.returncode}", file=sys.stderr)
log.write(f"srun {os.getpid()} exit codes={codes}\n")
sys.exit(max((c if c >= 0 else 128 - c) for c in codes))
'''

FAKE_SCONTROL = r'''#!PYTHON
"""Fake scontrol: only `scontrol show hostnames [LIST]`."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostlist import expand
args = sys.argv[1:]
if args[:2] != ["show", "hostnames"]:
    print(f"scontrol (fake): unsupported: {args}", file=sys.stderr)
    sys.exit(1)
for name in expand(args[2] if len(args) > 2 else os.environ["SLURM_JOB_NODELIST"]):
    print(name)
'''

FAKE_HOSTNAME = r'''#!/bin/sh
# Fake hostname: a fake Slurm node's name on that node; else the real one.
if [ "$#" -eq 0 ] && [ -n "${SLURMD_NODENAME:-}" ]; then
    echo "$SLURMD_NODENAME"
else
    exec REAL_HOSTNAME "$@"
fi
'''


def write_slurm_shims(shims: Path):
    shims.mkdir()
    srun = FAKE_SRUN.replace("#!PYTHON", f"#!{sys.executable}")
    (shims / "srun").write_text(srun)
    # scontrol shares srun's host list expansion.
    expand_src = srun.split("def expand", 1)[1].split("\nWITH_VALUE", 1)[0]
    (shims / "hostlist.py").write_text("import re\n\ndef expand" + expand_src)
    (shims / "scontrol").write_text(FAKE_SCONTROL.replace("#!PYTHON", f"#!{sys.executable}"))
    real_hostname = shutil.which("hostname")
    assert real_hostname, "hostname(1) not found"
    (shims / "hostname").write_text(FAKE_HOSTNAME.replace("REAL_HOSTNAME", real_hostname))
    # anncat itself, logging on which fake node it runs with which arguments.
    (shims / "anncat").write_text(f"""#!/bin/sh
printf 'anncat node=%s argv=%s\\n' "${{SLURMD_NODENAME:-}}" "$*" >> "$FAKE_SLURM_LOG"
exec {anncat_bin()} "$@"
""")
    for name in ("srun", "scontrol", "hostname", "anncat"):
        (shims / name).chmod(0o755)


def sbatch_header_ok(text: str):
    """#SBATCH lines must come before the first command (Slurm stops reading
    them there)."""
    seen_command = False
    for line in text.splitlines()[1:]:
        s = line.strip()
        if s.startswith("#SBATCH"):
            assert not seen_command, f"#SBATCH after the first command is ignored by Slurm: {line}"
        elif s and not s.startswith("#"):
            seen_command = True


def sbatch_invocations(text: str) -> list[tuple[str, list[str]]]:
    """`anncat SUB ...` commands in the script, including those inside
    `bash -c '...'` strings."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        if line.lstrip().startswith("#"):
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        found += anncat_invocations(tokens)
        for tok in tokens:
            if "anncat " in tok:
                try:
                    found += anncat_invocations(shlex.split(tok))
                except ValueError:
                    pass
    return found


def test_slurm_sbatch(bin_dir, reference, cli, procs, tmp_path):
    text = SBATCH.read_text()
    sbatch_header_ok(text)
    calls = sbatch_invocations(text)
    assert {sub for sub, _ in calls} == {"scheduler", "worker", "concat"}, calls
    for sub, args in calls:
        check_flags(str(SBATCH), sub, args, cli)

    shims = tmp_path / "shims"
    write_slurm_shims(shims)
    nodes = ["anncat-node1", "anncat-node2", "anncat-node3"]
    submit = tmp_path / "submit"
    shared = tmp_path / "shared"
    submit.mkdir()
    shared.mkdir()
    slurm_log = tmp_path / "fake-slurm.log"
    out = tmp_path / "results" / "merged.zarr"  # its directory does not exist yet
    env = clean_env(bin_dir)
    env["PATH"] = f"{shims}:{env['PATH']}"
    job = "4242"
    env.update({
        "ANNCAT_SHARED": str(shared),
        "FAKE_SLURM_LOG": str(slurm_log),
        # As Slurm sets them for `sbatch --nodes=3 --ntasks-per-node=1 --cpus-per-task=1 --mem=1G`
        "SLURM_JOB_ID": job, "SLURM_JOBID": job, "SLURM_JOB_NAME": "anncat",
        "SLURM_JOB_NODELIST": "anncat-node[1-3]", "SLURM_NODELIST": "anncat-node[1-3]",
        "SLURM_NNODES": "3", "SLURM_JOB_NUM_NODES": "3", "SLURM_NTASKS": "3", "SLURM_NPROCS": "3",
        "SLURM_NTASKS_PER_NODE": "1", "SLURM_TASKS_PER_NODE": "1(x3)", "SLURM_CPUS_PER_TASK": "1",
        "SLURM_CPUS_ON_NODE": "1", "SLURM_JOB_CPUS_PER_NODE": "1(x3)", "SLURM_MEM_PER_NODE": "1024",
        "SLURM_SUBMIT_DIR": str(submit), "SLURM_SUBMIT_HOST": "login1", "SLURM_CLUSTER_NAME": "fake",
        "SLURM_JOB_PARTITION": "batch", "SLURM_JOB_UID": str(os.getuid()), "SLURM_JOB_USER": "root",
        "SLURMD_NODENAME": "anncat-node1", "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
        "SLURM_TOPOLOGY_ADDR": "anncat-node1", "SLURM_GTIDS": "0", "SLURM_PRIO_PROCESS": "0",
        "ENVIRONMENT": "BATCH",
    })
    args = [*readme_example(), "-o", out]
    started = time.time()
    with netns(nodes) as ns:
        job_proc = procs.start("sbatch", ["bash", SBATCH, *args], env, cwd=submit, netns=ns)
        code = procs.wait("sbatch", job_proc)
        elapsed = time.time() - started
        leftovers = kill_pids(slurm_job_pids(slurm_log, job_proc.pid))
    log = procs.log("sbatch")
    slurm = slurm_log.read_text() if slurm_log.exists() else ""
    assert code == 0, f"anncat.sbatch exited {code}:\n{log}\n--- fake Slurm log:\n{slurm}"
    assert not leftovers, f"anncat.sbatch left processes running: {leftovers}\n{log}"
    assert_same_store(out, reference)
    # A successful job's log ends with the script's summary, with no trace of
    # a cancelled step (srun cancels its step when it gets SIGTERM).
    assert log.rstrip().splitlines()[-1].startswith(f"anncat.sbatch: wrote {out}"), log
    for bad in ("forcing job termination", "srun: error", "Killed", "CANCELLED"):
        assert bad not in log, f"{bad!r} in the log of a successful job:\n{log}"
    # One scheduler task on the first node; one worker per node, each naming
    # and advertising its own node.
    steps = [l for l in slurm.splitlines() if l.startswith("srun") and "argv=" in l]
    assert len(steps) == 2, slurm
    assert "nodes=anncat-node1 tasks=1" in steps[0] and "scheduler" in steps[0], steps[0]
    assert f"nodes={','.join(nodes)} tasks=3" in steps[1] and "worker" in steps[1], steps[1]
    # The worker step gets the job's --cpus-per-task itself (Slurm 22.05+).
    assert "'cpus-per-task': '1'" in steps[1], steps[1]
    # Each anncat ran where it should, with its own node's name.
    runs = [(m.group(1), m.group(2).split()) for m in re.finditer(r"^anncat node=(\S*) argv=(.*)$", slurm, re.M)]
    by_sub = {sub: [(node, argv) for node, argv in runs if argv[0] == sub] for sub in ("scheduler", "worker", "concat")}
    assert [node for node, _ in by_sub["scheduler"]] == ["anncat-node1"], runs
    assert [node for node, _ in by_sub["concat"]] == ["anncat-node1"], runs
    assert sorted(node for node, _ in by_sub["worker"]) == nodes, runs
    for node, argv in by_sub["scheduler"] + by_sub["worker"]:
        assert argv[argv.index("--advertise") + 1] == node, f"on {node}: {argv}"
    for node, argv in by_sub["worker"]:
        assert argv[argv.index("--name") + 1] == node, f"on {node}: {argv}"
        assert argv[argv.index("--memory-limit") + 1] == "921MiB", argv
        assert argv[argv.index("--allow-write") + 1] == str(out.parent), argv
    cluster_dir = shared / f"anncat-{job}"
    assert not (cluster_dir / "cluster.json").exists(), "the cluster file (with the secret) was left behind"
    report = json.loads((cluster_dir / "report.json").read_text())
    names = {w["name"] for w in report["workers"]}
    assert names and names <= set(nodes), f"workers in the report: {names}"
    # Workers report their task budget: --memory-limit less their own baseline.
    assert_budgets(report, 1024 * 90 // 100 * 2**20)
    print(f"\nslurm: sbatch script ran in {elapsed:.1f}s; workers that took part: {sorted(names)}")


def assert_budgets(report: dict, memory_limit: int):
    """Workers report their task budget: the --memory-limit they were given
    less their own baseline (tens of MiB)."""
    for w in report["workers"]:
        assert memory_limit - (64 << 20) < w["memory_limit"] <= memory_limit, \
            f"worker {w['name']}: budget {w['memory_limit']} for --memory-limit {memory_limit}"


def slurm_job_pids(slurm_log: Path, script_pid: int) -> set[int]:
    """Every process a fake Slurm job started: srun shims and their tasks,
    and anything else in the batch script's session."""
    pids = set()
    if slurm_log.exists():
        pids = {int(m.group(1)) for m in re.finditer(r"^(?:srun|task) (\d+) ", slurm_log.read_text(), re.M)}
    return pids | session_pids(script_pid)


@pytest.mark.parametrize("case", ["bad-input", "workers-fail"])
def test_slurm_sbatch_failures(bin_dir, procs, tmp_path, case):
    """A failing run ends with a non-zero exit and the cluster stopped:
    - bad-input: the concat refuses a missing input;
    - workers-fail: no worker can start (here: --threads 0), so the concat
      would wait for workers forever; the script notices and stops it."""
    shims = tmp_path / "shims"
    write_slurm_shims(shims)
    slurm_log = tmp_path / "fake-slurm.log"
    (tmp_path / "shared").mkdir()
    env = clean_env(bin_dir)
    env["PATH"] = f"{shims}:{env['PATH']}"
    env.update({"ANNCAT_SHARED": str(tmp_path / "shared"), "FAKE_SLURM_LOG": str(slurm_log),
                "SLURM_JOB_ID": "77", "SLURM_JOBID": "77", "SLURM_JOB_NODELIST": "anncat-node[1-2]",
                "SLURM_NODELIST": "anncat-node[1-2]", "SLURM_NNODES": "2", "SLURM_JOB_NUM_NODES": "2",
                "SLURM_MEM_PER_NODE": "512", "SLURM_CPUS_ON_NODE": "1", "SLURM_SUBMIT_DIR": str(tmp_path),
                "SLURMD_NODENAME": "anncat-node1"})
    inputs = [REPO / "examples/data/batch1.zarr", REPO / "examples/data/batch2.zarr"]
    if case == "bad-input":
        inputs[0] = tmp_path / "missing.zarr"
    else:
        env["ANNCAT_WORKER_THREADS"] = "0"
    out = tmp_path / "out" / "x.zarr"
    with netns(["anncat-node1", "anncat-node2"]) as ns:
        p = procs.start("sbatch", ["bash", SBATCH, *inputs, "-o", out], env, cwd=tmp_path, netns=ns)
        code = procs.wait("sbatch", p, timeout=60)
        leftovers = kill_pids(slurm_job_pids(slurm_log, p.pid))
    log = procs.log("sbatch")
    assert code != 0, log
    assert not leftovers, f"left running: {leftovers}\n{log}"
    assert not out.exists()
    assert not (tmp_path / "shared" / "anncat-77" / "cluster.json").exists()
    if case == "bad-input":
        assert "missing.zarr" in log, log
    else:
        assert "--threads must be at least 1" in log, log
        assert "the scheduler or all workers exited" in log, log


def test_slurm_sbatch_cancelled(bin_dir, procs, tmp_path):
    """SIGTERM to the batch script (as scancel or the time limit send it)
    while the concat runs: the script stops the concat, the workers and the
    scheduler, removes the cluster file and exits 143. The concat is held
    back by an `anncat` wrapper on PATH that turns `anncat concat` into a
    long sleep."""
    shims = tmp_path / "shims"
    write_slurm_shims(shims)
    (shims / "anncat").write_text(f"""#!/bin/sh
[ "$1" = concat ] && exec sleep 600
exec {anncat_bin()} "$@"
""")
    (shims / "anncat").chmod(0o755)
    slurm_log = tmp_path / "fake-slurm.log"
    shared = tmp_path / "shared"
    shared.mkdir()
    env = clean_env(bin_dir)
    env["PATH"] = f"{shims}:{env['PATH']}"
    env.update({"ANNCAT_SHARED": str(shared), "FAKE_SLURM_LOG": str(slurm_log),
                "SLURM_JOB_ID": "88", "SLURM_JOBID": "88", "SLURM_JOB_NODELIST": "anncat-node[1-2]",
                "SLURM_NODELIST": "anncat-node[1-2]", "SLURM_NNODES": "2", "SLURM_JOB_NUM_NODES": "2",
                "SLURM_MEM_PER_NODE": "512", "SLURM_CPUS_ON_NODE": "1", "SLURM_SUBMIT_DIR": str(tmp_path),
                "SLURMD_NODENAME": "anncat-node1"})
    # A partial output, as a run cancelled midway leaves (the held-back
    # concat makes none): the script says how to resume it.
    (tmp_path / "out" / "x.zarr.partial").mkdir(parents=True)
    with netns(["anncat-node1", "anncat-node2"]) as ns:
        p = procs.start("sbatch", ["bash", SBATCH, *readme_example(), "-o", tmp_path / "out" / "x.zarr"],
                        env, cwd=tmp_path, netns=ns)
        deadline = time.time() + 60
        # Running: the scheduler, both workers and the held-back concat.
        def held_concat():
            for pid in session_pids(p.pid):
                try:
                    if psutil.Process(pid).cmdline() == ["sleep", "600"]:
                        return True
                except psutil.Error:
                    pass
            return False

        while not (len(re.findall(r"^task ", slurm_log.read_text() if slurm_log.exists() else "", re.M)) == 3
                   and held_concat()):
            assert p.poll() is None and time.time() < deadline, procs.log("sbatch")
            time.sleep(0.1)
        time.sleep(1)  # the workers connect
        running = session_pids(p.pid)
        os.kill(p.pid, signal.SIGTERM)
        code = procs.wait("sbatch", p, timeout=30)
        leftovers = kill_pids(slurm_job_pids(slurm_log, p.pid) | running)
    log = procs.log("sbatch")
    assert code == 143, f"exit {code}\n{log}"
    assert not leftovers, f"left running after SIGTERM: {leftovers}\n{log}"
    assert "x.zarr.partial is kept: submit the same command with --resume" in log, log
    assert not (shared / "anncat-88" / "cluster.json").exists()


# =========================================================== Kubernetes


def k8s_expand(text: str, env: dict) -> str:
    """Kubernetes' $(VAR) expansion: defined variables are replaced, $$ is a
    literal $, undefined references stay as written."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                j = text.find(")", i + 2)
                if j != -1:
                    name = text[i + 2:j]
                    out.append(env[name] if name in env else text[i:j + 1])
                    i = j + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def map_paths(text: str, mounts: dict[str, Path]) -> str:
    """Replaces container paths (as a word, or after '=') by host directories."""
    if not mounts:
        return text
    alts = "|".join(re.escape(m.rstrip("/")) for m in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(rf"(^|[=\s\"':])({alts})(?=/|$|[\s\"':])")
    return pattern.sub(lambda m: m.group(1) + str(mounts[m.group(2)] if m.group(2) in mounts
                                                   else mounts[m.group(2) + "/"]), text)


def unmapped_paths(args: list[str], mounts: dict[str, Path], allowed=("/bin/", "/usr/")) -> list[str]:
    """Absolute paths in args that no mount covers."""
    bad = []
    for arg in args:
        for tok in re.split(r"[\s=]", arg):
            tok = tok.strip("\"'")
            if tok.startswith("/") and not tok.startswith(allowed):
                if not any(tok == m.rstrip("/") or tok.startswith(m.rstrip("/") + "/") for m in mounts):
                    bad.append(tok)
    return bad


def load_k8s() -> list[dict]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = list(kust["resources"]) + ["job.yaml"]
    docs = []
    for f in files:
        docs += [d for d in yaml.safe_load_all((K8S / f).read_text()) if d]
    listed = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == set(files), f"manifests not covered by the test: {listed - set(files)}"
    return docs


def find(docs, kind, name) -> dict:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind} {name}, found {len(hits)}"
    return hits[0]


def readme_line(prefix: str) -> str:
    """The one line of cluster-configs/README.md that starts with prefix."""
    lines = [l.strip() for l in README.read_text().splitlines() if l.strip().startswith(prefix)]
    assert len(lines) == 1, f"README.md should have exactly one line starting with {prefix!r}: {lines}"
    return lines[0]


def make_secret(bin_dir, workdir: Path, netns_name: str) -> tuple[str, dict[str, bytes]]:
    """Runs the README's `anncat keygen` and reads the Secret its
    `kubectl create secret generic` command would make."""
    keygen = shlex.split(readme_line("anncat keygen "))
    env = clean_env(bin_dir)
    check_run(["ip", "netns", "exec", netns_name, *keygen], env, cwd=workdir)
    create = shlex.split(readme_line("kubectl create secret generic "))
    name, data = create[4], {}
    for arg in create[5:]:
        assert arg.startswith("--from-file="), f"unsupported in the README's kubectl command: {arg}"
        spec = arg.split("=", 1)[1]
        key, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        mode = stat.S_IMODE((workdir / path).stat().st_mode)
        assert mode == 0o600, f"keygen wrote {path} with mode {oct(mode)}, not 0600"
        data[key or Path(path).name] = (workdir / path).read_bytes()
    assert data, "the README's kubectl create secret command puts nothing in the Secret"
    return name, data


def pod_run_as(pod: dict) -> tuple[int, int, list[int]]:
    sc = pod.get("securityContext", {})
    uid, gid = sc.get("runAsUser", 0), sc.get("runAsGroup", 0)
    groups = [gid] + ([sc["fsGroup"]] if "fsGroup" in sc else []) + list(sc.get("supplementalGroups", []))
    return uid, gid, sorted(set(groups))


def materialize_pod(pod: dict, container: dict, pod_dir: Path, secrets: dict, pvcs: dict) -> dict[str, Path]:
    """The container's mounts as host directories: Secrets as the kubelet
    writes them (defaultMode / item modes, fsGroup adds group read), PVCs as
    the shared directories in `pvcs`. Returns mountPath -> directory."""
    fs_group = pod.get("securityContext", {}).get("fsGroup")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {}
    for vm in container.get("volumeMounts", []):
        vol = volumes[vm["name"]]
        if "secret" in vol:
            sec = vol["secret"]
            data = secrets[sec["secretName"]]
            d = pod_dir / f"secret-{vm['name']}"
            d.mkdir(parents=True)
            items = sec.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                assert item["key"] in data, f"Secret {sec['secretName']} has no key {item['key']}"
                f = d / item["path"]
                f.write_bytes(data[item["key"]])
                mode = item.get("mode", sec.get("defaultMode", 0o644))
                if fs_group is not None:
                    os.chown(f, 0, fs_group)
                    mode |= 0o440  # the kubelet's read-only fsGroup mask
                f.chmod(mode)
            d.chmod(0o755 if fs_group is None else 0o2755)
            if fs_group is not None:
                os.chown(d, 0, fs_group)
            mounts[vm["mountPath"]] = d
        elif "persistentVolumeClaim" in vol:
            mounts[vm["mountPath"]] = pvcs[vol["persistentVolumeClaim"]["claimName"]]
        elif "emptyDir" in vol:
            d = pod_dir / f"empty-{vm['name']}"
            d.mkdir(parents=True, mode=0o777)
            mounts[vm["mountPath"]] = d
        else:
            pytest.fail(f"volume type not emulated by the test: {vol}")
    return mounts


def container_argv(container: dict, pod_name: str, pod_ip: str, bin_dir: Path, mounts: dict) -> tuple[list[str], dict]:
    env = {"PATH": f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/", "HOSTNAME": pod_name}
    if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
        # No writable /tmp in such a container: temporary files must fail here too.
        env["TMPDIR"] = "/nonexistent-read-only-root/tmp"
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = k8s_expand(str(var["value"]), env)
        else:
            field = var["valueFrom"].get("fieldRef", {}).get("fieldPath")
            values = {"status.podIP": pod_ip, "metadata.name": pod_name, "metadata.namespace": "default",
                      "spec.nodeName": "node-1", "status.hostIP": pod_ip}
            assert field in values, f"env source not emulated by the test: {var}"
            env[var["name"]] = values[field]
    assert "command" in container, f"container {container['name']}: give command: (the image entrypoint is not used)"
    raw = [*container["command"], *container.get("args", [])]
    for a in raw:
        assert isinstance(a, str), f"container {container['name']}: args must be strings (quote numbers): {a!r}"
    expanded = [k8s_expand(a, env) for a in raw]
    bad = unmapped_paths(expanded, mounts)
    assert not bad, f"container {container['name']} uses paths no volume provides: {bad}"
    return [map_paths(a, mounts) for a in expanded], {k: map_paths(v, mounts) for k, v in env.items()}


def check_k8s_manifests(docs, cli):
    sched = find(docs, "Deployment", "anncat-scheduler")
    svc = find(docs, "Service", "anncat-scheduler")
    workers = find(docs, "Deployment", "anncat-worker")
    job = find(docs, "Job", "anncat-concat")
    pvc = find(docs, "PersistentVolumeClaim", "anncat-data")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    for d in (sched, workers):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), f"{d['metadata']['name']}: selector"
    assert sched["spec"]["replicas"] == 1
    assert svc["spec"]["selector"].items() <= sched["spec"]["template"]["metadata"]["labels"].items()
    (port,) = svc["spec"]["ports"]
    assert port["protocol"] == "UDP" and port["port"] == 7878, port
    sc = sched["spec"]["template"]["spec"]["containers"][0]
    cports = {p.get("name"): p for p in sc["ports"]}
    target = cports[port["targetPort"]] if isinstance(port["targetPort"], str) else \
        next(p for p in sc["ports"] if p["containerPort"] == port["targetPort"])
    assert target["protocol"] == "UDP"
    listen = sc["args"][sc["args"].index("--listen") + 1]
    assert listen.endswith(f":{target['containerPort']}"), f"scheduler listens on {listen}"
    for d in (sched, workers, job):
        spec = d["spec"]["template"]["spec"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        assert "anncat-data" in claims, f"{d['metadata']['name']} does not mount the PVC"
        for c in spec["containers"]:
            for sub, args in anncat_invocations([*c["command"], *c.get("args", [])]):
                check_flags(f"{d['kind']} {d['metadata']['name']}", sub, args, cli)
    wc = workers["spec"]["template"]["spec"]["containers"][0]
    res = wc["resources"]
    assert res["requests"]["memory"] == res["limits"]["memory"], "worker memory requests != limits"
    limit = parse_size(res["limits"]["memory"])
    wl = parse_size(wc["args"][wc["args"].index("--memory-limit") + 1])
    assert wl <= 0.9 * limit, f"worker --memory-limit {wl} leaves too little headroom below {limit}"
    jc = job["spec"]["template"]["spec"]["containers"][0]
    assert parse_size(jc["args"][jc["args"].index("--memory-limit") + 1]) == wl, "job and worker memory limits differ"
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    return sched, workers, job


def test_kubernetes(bin_dir, reference, cli, procs, tmp_path):
    docs = load_k8s()
    sched, workers, job = check_k8s_manifests(docs, cli)
    base = Path(tempfile.mkdtemp(prefix="anncat-k8s-"))  # reachable by the pods' uid
    base.chmod(0o755)
    try:
        with netns(["anncat-scheduler"]) as ns:
            secret_src = base / "secret-src"
            secret_src.mkdir(mode=0o700)
            secret_name, secret = make_secret(bin_dir, secret_src, ns)
            for d in (sched, workers, job):
                for v in d["spec"]["template"]["spec"]["volumes"]:
                    if "secret" in v:
                        assert v["secret"]["secretName"] == secret_name, \
                            f"{d['metadata']['name']} mounts Secret {v['secret']['secretName']}, README makes {secret_name}"
            # The PVC as the README fills it: inputs in /data/in, /data/out made.
            pvc = base / "pvc-anncat-data"
            uid, gid, _ = pod_run_as(job["spec"]["template"]["spec"])
            (pvc / "out").mkdir(parents=True)
            shutil.copytree(REPO / "examples" / "data", pvc / "in")
            for root, dirs, files in os.walk(pvc):
                for n in [root, *(os.path.join(root, x) for x in dirs + files)]:
                    os.chown(n, uid, gid)
            pvc.chmod(0o2775)

            def start_pod(d, name):
                pod = d["spec"]["template"]["spec"]
                (container,) = pod["containers"]
                mounts = materialize_pod(pod, container, base / name, {secret_name: secret}, {"anncat-data": pvc})
                argv, env = container_argv(container, name, "127.0.0.1", bin_dir, mounts)
                return procs.start(name, argv, env, cwd="/", netns=ns, user=pod_run_as(pod)), argv

            started = time.time()
            start_pod(sched, "anncat-scheduler-0")
            replicas = workers["spec"]["replicas"]
            assert replicas == 2, "the test runs the manifest's 2 worker replicas"
            for i in range(replicas):
                start_pod(workers, f"anncat-worker-{i}")
            # The Job controller: a failed pod is retried up to backoffLimit times.
            attempts = job["spec"].get("backoffLimit", 6) + 1
            for attempt in range(attempts):
                p, job_argv = start_pod(job, f"anncat-concat-{attempt}")
                code = procs.wait(f"anncat-concat-{attempt}", p)
                if code == 0:
                    break
            elapsed = time.time() - started
            for name, q in procs.procs:
                if name.startswith(("anncat-scheduler", "anncat-worker")):
                    assert q.poll() is None, f"{name} exited ({q.returncode}) during the job:\n{procs.logs()}"
            assert code == 0, f"the concat Job failed {attempts} times:\n{procs.logs()}"
            retries = [n for n, _ in procs.procs if n.startswith("anncat-concat-")][:-1]
            assert not retries, f"the Job needed retries:\n{procs.logs()}"
            out = Path(job_argv[job_argv.index("-o") + 1])
            assert_same_store(out, reference)
            report = json.loads(Path(job_argv[job_argv.index("--report") + 1]).read_text())
            names = {w["name"] for w in report["workers"]}
            assert names and names <= {f"anncat-worker-{i}" for i in range(replicas)}, names
            left = procs.stop()
            assert len(left) == 1 + replicas, f"scheduler and workers should still have been running: {left}"
            print(f"\nkubernetes: job done in {elapsed:.1f}s; workers that took part: {sorted(names)}")
    finally:
        procs.stop()
        shutil.rmtree(base, ignore_errors=True)


# ============================================================== compose


def compose_interpolate(value, env: dict):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $VAR
    and $$ interpolation, applied to every string of the file."""
    if isinstance(value, dict):
        return {k: compose_interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [compose_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("plain")
        op, arg = m.group("op"), m.group("arg")
        val = env.get(name)
        if op in (":-", "-"):
            return val if (val if op == ":-" else val is not None) else compose_interpolate(arg, env)
        if op in (":?", "?"):
            if (not val) if op == ":?" else val is None:
                raise AssertionError(f"compose would stop: {name}: {arg}")
            return val
        return val or ""

    pattern = re.compile(r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                         r"|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)")
    return pattern.sub(sub, value)


def dockerfile_entrypoint() -> list[str]:
    lines = [l for l in DOCKERFILE.read_text().splitlines() if l.startswith("ENTRYPOINT")]
    return json.loads(lines[-1].split(None, 1)[1])


def test_compose(bin_dir, reference, cli, procs, tmp_path):
    base = Path(tempfile.mkdtemp(prefix="anncat-compose-"))
    base.chmod(0o755)
    uid = gid = 10001
    out_dir = base / "out"
    out_dir.mkdir()
    os.chown(out_dir, uid, gid)  # `mkdir -p out` by that user
    cluster_vol = base / "volume-cluster"
    cluster_vol.mkdir()
    cluster_vol.chmod(0o1777)  # a new named volume takes the image's /cluster (Dockerfile: 1777)
    compose_env = {"ANNCAT_UID": str(uid), "ANNCAT_GID": str(gid), "ANNCAT_OUT": str(out_dir)}
    spec = compose_interpolate(yaml.safe_load(COMPOSE.read_text()), compose_env)
    services = spec["services"]
    assert set(services) >= {"scheduler", "worker", "concat"}
    entrypoint = dockerfile_entrypoint()
    assert entrypoint == ["anncat"], entrypoint
    assert "cluster" in spec.get("volumes", {})
    try:
        with netns(["scheduler", os.uname().nodename]) as ns:
            def service(name):
                svc = services[name]
                assert svc["build"]["dockerfile"] == "cluster-configs/Dockerfile"
                assert (COMPOSE.parent / svc["build"]["context"]).resolve() == REPO
                mounts = {}
                for v in svc["volumes"]:
                    src, dst, *mode = v.split(":")
                    if src in spec["volumes"]:
                        assert src == "cluster", f"unexpected named volume {src}"
                        mounts[dst] = cluster_vol
                    else:
                        mounts[dst] = (COMPOSE.parent / src).resolve()
                argv = [*svc.get("entrypoint", entrypoint), *svc.get("command", [])]
                assert not unmapped_paths(argv[1:], mounts, allowed=("/bin/", "/usr/")), argv
                argv = [map_paths(a, mounts) for a in argv]
                user = tuple(int(x) for x in str(svc["user"]).split(":"))
                env = {"PATH": f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       "HOME": "/"}
                env.update({k: map_paths(str(v), mounts) for k, v in (svc.get("environment") or {}).items()})
                return argv, env, (user[0], user[1], [user[1]]), mounts

            # The CLI flags every service uses exist.
            for name in ("scheduler", "worker", "concat"):
                argv, *_ = service(name)
                tokens = shlex.split(argv[2]) if argv[:2] == ["/bin/sh", "-c"] else argv
                calls = anncat_invocations(tokens) or ([("concat", tokens[2:])] if tokens[:2] == ["anncat", "concat"] else [])
                assert calls, f"{name}: no anncat command in {argv}"
                for sub, args in calls:
                    check_flags(f"compose service {name}", sub, args, cli)

            started = time.time()
            argv, env, user, mounts = service("scheduler")
            sched = procs.start("scheduler", argv, env, cwd="/", netns=ns, user=user)
            # The healthcheck the workers wait for.
            hc = services["scheduler"]["healthcheck"]["test"]
            assert hc[0] == "CMD"
            hc = [map_paths(a, mounts) for a in hc[1:]]
            deadline = time.time() + 30
            while subprocess.run(hc).returncode != 0:
                assert sched.poll() is None, f"scheduler exited:\n{procs.logs()}"
                assert time.time() < deadline, f"scheduler never healthy:\n{procs.logs()}"
                time.sleep(0.2)
            replicas = services["worker"]["deploy"]["replicas"]
            wargs = shlex.split(service("worker")[0][2])
            wlimit = parse_size(wargs[wargs.index("--memory-limit") + 1])
            assert wlimit <= 0.9 * docker_size(services["worker"]["mem_limit"]), "worker memory headroom"
            cargs = service("concat")[0]
            assert parse_size(cargs[cargs.index("--memory-limit") + 1]) == wlimit, "concat and worker limits differ"
            for i in range(replicas):
                argv, env, user, _ = service("worker")
                procs.start(f"worker-{i + 1}", argv, env, cwd="/", netns=ns, user=user)
            argv, env, user, _ = service("concat")
            p = procs.start("concat", argv, env, cwd="/", netns=ns, user=user)
            code = procs.wait("concat", p)
            elapsed = time.time() - started
            assert code == 0, f"compose concat failed:\n{procs.logs()}"
            out = Path(argv[argv.index("-o") + 1])
            assert out.parent == out_dir
            assert_same_store(out, reference)
            assert out.stat().st_uid == uid, "the output should belong to ANNCAT_UID"
            report = json.loads(Path(argv[argv.index("--report") + 1]).read_text())
            assert_budgets(report, 900 * 2**20)
            left = procs.stop()
            assert len(left) == 1 + replicas, f"scheduler and workers should still have been running: {left}"
            print(f"\ncompose: concat done in {elapsed:.1f}s with {len(report['workers'])} worker(s)")
    finally:
        procs.stop()
        shutil.rmtree(base, ignore_errors=True)


# =========================================================== local.toml


def toml_value_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def test_local_toml_names_every_option(cli):
    text = LOCAL_TOML.read_text()
    config = tomllib.loads(text)
    assert set(config) == set(SUBCOMMANDS), f"tables: {sorted(config)}"
    # The commented-out keys, per table.
    commented, table = {t: set() for t in SUBCOMMANDS}, None
    for line in text.splitlines():
        m = re.match(r"^\[([a-z]+)\]", line)
        if m:
            table = m.group(1)
            continue
        m = re.match(r"^#\s*([a-z][a-z0-9-]*)\s*=", line)
        if m and table:
            commented[table].add(m.group(1))
    for sub, options in cli.items():
        keys = set(config[sub])
        unknown = (keys | commented[sub]) - set(options)
        assert not unknown, f"[{sub}] names options `anncat {sub}` does not have: {sorted(unknown)}"
        missing = set(options) - keys - commented[sub]
        assert not missing, f"[{sub}] lacks options of `anncat {sub} --help`: {sorted(missing)}"
        for name in keys:
            default = options[name]["default"]
            value = config[sub][name]
            if default is not None:
                assert toml_value_text(value) == default, \
                    f"[{sub}] {name} = {value!r}, but the default is {default!r}"
            else:
                assert value is False or value == [], \
                    f"[{sub}] {name} = {value!r} has no default to copy: leave it commented out"
        for name in commented[sub] & set(options):
            assert options[name]["default"] is None, f"[{sub}] {name} has a default ({options[name]['default']}): set it"


def test_local_toml_runs(bin_dir, reference, procs, tmp_path):
    env = clean_env(bin_dir)
    cfg = ["anncat", "--config", LOCAL_TOML]
    # concat on the default local cluster, options from the file.
    out = tmp_path / "concat.zarr"
    check_run([*cfg, "concat", *readme_example(), "-o", out, "--quiet"], env)
    assert_same_store(out, reference)
    # convert
    conv = tmp_path / "convert.zarr"
    plain = tmp_path / "convert-plain.zarr"
    check_run([*cfg, "convert", REPO / "examples/data/batch3.zarr", "-o", conv], env)
    check_run(["anncat", "convert", REPO / "examples/data/batch3.zarr", "-o", plain], env)
    assert_equal(ad.read_zarr(conv), ad.read_zarr(plain))
    # a scheduler and a worker from the file, and a concat submitted to them
    cluster_file = tmp_path / "cluster.json"
    sched = procs.start("scheduler", [*cfg, "scheduler", "--cluster-file", cluster_file], env)
    deadline = time.time() + 30
    while not cluster_file.exists():
        assert sched.poll() is None and time.time() < deadline, procs.logs()
        time.sleep(0.1)
    results = tmp_path / "results"
    results.mkdir()
    procs.start("worker", [*cfg, "worker", "--cluster-file", cluster_file, "--memory-limit", "512MiB",
                           "--allow-write", results], env)
    remote = results / "remote.zarr"
    p = procs.start("concat", [*cfg, "concat", *readme_example(), "-o", remote, "--cluster-file", cluster_file,
                               "--memory-limit", "512MiB"], env)
    assert procs.wait("concat", p) == 0, procs.logs()
    assert_same_store(remote, reference)
    # keygen from the file
    check_run([*cfg, "keygen", "--address", "localhost:7878", "--cluster-file", tmp_path / "k.json",
               "--key-file", tmp_path / "k.key"], env)
    assert stat.S_IMODE((tmp_path / "k.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    left = procs.stop()
    assert len(left) == 2, f"scheduler and worker should still have been running: {left}"
