#!/usr/bin/env bash
# Runs cluster-configs/slurm/anncat.sbatch under a real Slurm: a one-node
# cluster (slurmctld and slurmd on this machine, Debian's slurm-wlm, munge
# for authentication) started for the test and stopped at its end.
#
#   1. the README example, submitted with sbatch: the job exits 0, its log
#      ends with the script's "wrote ..." line and holds no "CANCELLED",
#      "Killed" or srun error, and the output equals (anndata's
#      assert_equal) a local `anncat concat` of the same inputs and options;
#   2. a bigger job (generated inputs, many small tasks) cancelled with a
#      plain `scancel JOBID` once some tasks are journaled: the log says to
#      resubmit with --resume, OUT.partial is kept; the same command with
#      --resume then completes, reuses the journaled tasks, and its output
#      is byte-identical to a local run's.
#
# Needs root and Debian (bookworm): installs slurm-wlm and munge with apt if
# missing; writes /etc/munge/munge.key if missing and starts munged unless
# one is running (stopped again at the end if started here). Slurm's
# configuration, state, logs and all data live in a temporary directory
# under $TMPDIR or /tmp (1.5 GB at most; removed at the end,
# ANNCAT_SLURM_KEEP=1 keeps it); nothing is written to /etc/slurm. Every
# daemon started is stopped by its pid on exit, failure included. Runs
# again on the same machine the same way. About 40 s on 2 cores.
#
# Environment:
#   ANNCAT_BIN   the anncat binary (default: target/release/anncat)
#   PYTHON       a Python with anndata (default: the interop venv,
#                target/interop-venv/bin/python, made by
#                tests/interop/setup_venv.sh if missing)
#   ANNCAT_SLURM_KEEP=1  keep the temporary directory (printed at the end)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
anncat_bin="${ANNCAT_BIN:-$repo/target/release/anncat}"
keep="${ANNCAT_SLURM_KEEP:-}"
sbatch_script="$repo/cluster-configs/slurm/anncat.sbatch"

# No option of the caller's environment may reach the jobs or the local runs.
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep -E '^(ANNCAT_|SLURM_|SLURMD_)' || true)

fail() {
    echo "tests/slurm/run.sh: FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "must run as root (installs packages, starts slurmctld, slurmd and munged)"
[ -x "$anncat_bin" ] || fail "no anncat binary at $anncat_bin (build it, or set ANNCAT_BIN)"
anncat_bin="$(cd "$(dirname "$anncat_bin")" && pwd -P)/$(basename "$anncat_bin")"

# ------------------------------------------------------------ timing

script_start=$(date +%s.%N)
phase_name=""
phase_start=""
timings=()
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
end_phase() {
    if [ -n "$phase_name" ]; then
        local t
        t="$(elapsed "$phase_start")"
        echo "   ($phase_name: ${t}s)"
        timings+=("$(printf '%6ss  %s' "$t" "$phase_name")")
    fi
    phase_name=""
}
phase() {
    end_phase
    phase_name="$1"
    phase_start=$(date +%s.%N)
    echo "== $1"
}

# ------------------------------------------------------------ clean-up

work=""
policy_rc=""
munged_pid=""
slurmctld_pid=""
slurmd_pid=""
jobs_submitted=()

stop_pid() { # NAME PID: SIGTERM, up to 15 s, then SIGKILL; reaps it
    local name="$1" pid="$2" i
    kill -TERM "$pid" 2> /dev/null || return 0
    for i in $(seq 150); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2> /dev/null; then
        echo "   $name (pid $pid) still running after SIGTERM; SIGKILL" >&2
        kill -KILL "$pid" 2> /dev/null || true
    fi
    wait "$pid" 2> /dev/null || true
}

# Processes whose command line holds STRING (with bash builtins only, so
# that no process of the search matches itself), leaving out the daemons.
pids_with() {
    local p args
    for p in /proc/[0-9]*; do
        p="${p#/proc/}"
        case " $$ $munged_pid $slurmctld_pid $slurmd_pid " in *" $p "*) continue ;; esac
        mapfile -d '' args 2> /dev/null < "/proc/$p/cmdline" || continue
        [[ "${args[*]}" == *"$1"* ]] && echo "$p"
    done
    return 0
}
# Processes of the test's jobs (job steps, the batch script, anncat
# processes): their command lines name the test's directory.
work_pids() {
    [ -n "$work" ] || return 0
    pids_with "$work/"
}
describe_pids() {
    local p args
    for p in "$@"; do
        mapfile -d '' args 2> /dev/null < "/proc/$p/cmdline" && echo "$p ${args[*]}"
    done
}

cleanup() {
    local rc=$? pid left
    set +e
    trap - EXIT INT TERM
    phase "clean-up: jobs, daemons, temporary directory"
    if [ "${#jobs_submitted[@]}" -gt 0 ] && [ -n "$slurmctld_pid" ] && kill -0 "$slurmctld_pid" 2> /dev/null; then
        scancel --quiet "${jobs_submitted[@]}" 2> /dev/null
        for _ in $(seq 120); do
            [ -z "$(squeue -h -o %i 2> /dev/null)" ] && break
            sleep 0.5
        done
    fi
    [ -z "$slurmd_pid" ] || stop_pid slurmd "$slurmd_pid"
    [ -z "$slurmctld_pid" ] || stop_pid slurmctld "$slurmctld_pid"
    [ -z "$munged_pid" ] || stop_pid munged "$munged_pid"
    echo "   daemons stopped after $(elapsed "$phase_start")s"
    left="$(work_pids | tr '\n' ' ')"
    if [ -n "$left" ]; then
        echo "tests/slurm/run.sh: processes of the test left running, killed:" >&2
        describe_pids $left >&2
        for pid in $left; do kill -KILL "$pid" 2> /dev/null; done
        rc=1
    fi
    if [ -n "$policy_rc" ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ "$rc" -ne 0 ] && [ -n "$work" ] && [ -d "$work" ]; then
        for f in "$work"/job-*.out; do
            [ -f "$f" ] && { echo "--- $f"; cat "$f"; }
        done >&2
        for f in "$work"/log/slurmctld.log "$work"/log/slurmd.log; do
            [ -f "$f" ] && { echo "--- $f (last 30 lines)"; tail -n 30 "$f"; }
        done >&2
    fi
    if [ -n "$work" ] && [ -d "$work" ]; then
        if [ -n "$keep" ]; then
            echo "kept $work"
        else
            rm -rf -- "$work"
        fi
    fi
    end_phase
    if [ "$rc" -eq 0 ]; then
        echo "== timings"
        printf '%s\n' "${timings[@]}"
        echo "tests/slurm/run.sh: passed in $(elapsed "$script_start")s"
    else
        echo "tests/slurm/run.sh: failed (exit $rc) after $(elapsed "$script_start")s" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work="$(mktemp -d --tmpdir anncat-slurm-test.XXXXXX)"
chmod 755 "$work"
mkdir -p "$work/bin" "$work/log" "$work/state" "$work/spool" "$work/shared" "$work/out" "$work/ref" "$work/big"
ln -s "$anncat_bin" "$work/bin/anncat" # the job runs `anncat` from PATH
export PATH="$work/bin:$PATH"

# ------------------------------------------------------------ 1. packages

phase "packages: slurm-wlm and munge"
missing=0
for cmd in slurmctld slurmd sbatch srun scontrol squeue sinfo scancel munged munge unmunge; do
    command -v "$cmd" > /dev/null || missing=1
done
if [ "$missing" = 1 ]; then
    # Keep apt from starting the packages' own daemons (with the default
    # configuration): this test starts its own and stops them by pid.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_rc=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    {
        apt-get -o DPkg::Lock::Timeout=900 update -q &&
            apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends slurm-wlm munge
    } > "$work/log/apt.log" 2>&1 || fail "apt-get could not install slurm-wlm and munge: $(tail -n 20 "$work/log/apt.log")"
    echo "   installed slurm-wlm and munge (apt-get)"
    if [ -n "$policy_rc" ]; then
        rm -f /usr/sbin/policy-rc.d
        policy_rc=""
    fi
else
    echo "   already installed"
fi
slurmctld -V

# ------------------------------------------------------------ Python

phase "Python with anndata"
if [ -z "${PYTHON:-}" ]; then
    PYTHON="$repo/target/interop-venv/bin/python"
    [ -x "$PYTHON" ] || PYTHON="$(bash "$repo/tests/interop/setup_venv.sh" 0.12)/bin/python"
fi
"$PYTHON" -c 'import anndata' 2> /dev/null || fail "$PYTHON cannot import anndata (set PYTHON)"
echo "   $PYTHON"

# ------------------------------------------------------------ 2. munge

phase "munge"
if munge -n 2> /dev/null | unmunge > /dev/null 2>&1; then
    echo "   munged already running"
else
    key=/etc/munge/munge.key
    if [ ! -s "$key" ]; then
        install -d -o munge -g munge -m 0700 /etc/munge
        if command -v mungekey > /dev/null; then
            mungekey --create --keyfile="$key"
        else
            dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
        fi
        chown munge:munge "$key"
        chmod 0400 "$key"
        echo "   wrote $key"
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    # As the munge user (as the package's service runs it), in the
    # foreground: $! is munged itself.
    setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground \
        > "$work/log/munged.out" 2>&1 &
    munged_pid=$!
    for _ in $(seq 100); do
        munge -n 2> /dev/null | unmunge > /dev/null 2>&1 && break
        kill -0 "$munged_pid" 2> /dev/null || fail "munged exited: $(cat "$work/log/munged.out")"
        sleep 0.1
    done
    munge -n | unmunge > /dev/null || fail "munged does not answer: $(cat "$work/log/munged.out")"
    echo "   started munged (pid $munged_pid)"
fi

# ------------------------------------------------------------ 3. Slurm

phase "slurmctld and slurmd up, node idle"
node="$(hostname -s)"
getent hosts "$(hostname)" > /dev/null ||
    fail "$(hostname) does not resolve: anncat's scheduler and workers advertise the host name (add it to /etc/hosts)"
# CPUs, sockets, cores, threads and RealMemory as slurmd sees them.
node_hw="$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* *//')"
real_mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<< "$node_hw")"
cpus="$(nproc)"
[ -n "$real_mem" ] || fail "slurmd -C gave no RealMemory: $node_hw"

port_in_use() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }
port=""
for p in $(seq 16817 2 16999); do
    if ! port_in_use "$p" && ! port_in_use "$((p + 1))"; then
        port="$p"
        break
    fi
done
[ -n "$port" ] || fail "no two free ports in 16817-17000 for slurmctld and slurmd"

export SLURM_CONF="$work/slurm.conf"
cat > "$SLURM_CONF" << EOF
# One-node cluster of tests/slurm/run.sh
ClusterName=anncat-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 $node_hw State=UNKNOWN
PartitionName=anncat Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -f "$SLURM_CONF" > "$work/log/slurmctld.out" 2>&1 &
slurmctld_pid=$!
slurmd -D -f "$SLURM_CONF" -N "$node" > "$work/log/slurmd.out" 2>&1 &
slurmd_pid=$!
state=""
for _ in $(seq 600); do
    kill -0 "$slurmctld_pid" 2> /dev/null || fail "slurmctld exited: $(tail -n 20 "$work/log/slurmctld.out")"
    kill -0 "$slurmd_pid" 2> /dev/null || fail "slurmd exited: $(tail -n 20 "$work/log/slurmd.out")"
    state="$(sinfo -h -N -n "$node" -o %t 2> /dev/null || true)"
    [ "$state" = idle ] && break
    sleep 0.1
done
[ "$state" = idle ] || fail "node $node not idle after 60 s (state: ${state:-none}): $(sinfo -R 2>&1)"
sinfo -N -l | sed 's/^/   /'

# Job resources: 2 CPUs (1 on a one-CPU machine), half the memory up to 4 GiB.
job_cpus=2
[ "$cpus" -ge 2 ] || job_cpus=1
job_mem=$((real_mem / 2))
[ "$job_mem" -le 4096 ] || job_mem=4096
export ANNCAT_SHARED="$work/shared"
cd "$work"

# ------------------------------------------------------------ helpers

jid=""
submit() { # ARGS...: sbatch the script with these arguments; sets jid
    jid="$(sbatch --parsable --nodes=1 --cpus-per-task="$job_cpus" --mem="${job_mem}M" --time=00:30:00 \
        --output="$work/job-%j.out" "$sbatch_script" "$@")"
    jid="${jid%%;*}"
    jobs_submitted+=("$jid")
    echo "   job $jid"
}

job_state() { scontrol -o show job "$1" 2> /dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true; }
job_exit() { scontrol -o show job "$1" 2> /dev/null | grep -o ' ExitCode=[0-9:]*' | cut -d= -f2 || true; }

wait_job() { # JOBID TIMEOUT-S: until the job has ended and its processes are gone
    local jid="$1" timeout="$2" st="" i
    for i in $(seq $((timeout * 5))); do
        st="$(job_state "$jid")"
        case "$st" in
            PENDING | CONFIGURING | RUNNING | COMPLETING | SUSPENDED | REQUEUED | RESIZING | SIGNALING | STAGE_OUT) ;;
            *) break ;;
        esac
        sleep 0.2
    done
    for i in $(seq 50); do
        [ -z "$(work_pids)" ] && break
        sleep 0.2
    done
    echo "$st"
}

expect_completed() { # WHAT JOBID TIMEOUT-S OUT: the job ended well, its log clean, OUT finished
    local what="$1" id="$2" timeout="$3" out="$4" st log
    st="$(wait_job "$id" "$timeout")"
    log="$work/job-$id.out"
    sed 's/^/   | /' "$log"
    [ "$st" = COMPLETED ] || fail "$what $id ended $st"
    [ "$(job_exit "$id")" = 0:0 ] || fail "$what $id exit code $(job_exit "$id")"
    check_clean_log "$log" "$out"
    [ -d "$out" ] && [ ! -e "$out.partial" ] || fail "no $out, or $out.partial left"
}

check_clean_log() { # LOG OUT: a successful job's log
    local log="$1" out="$2" last
    last="$(tail -n 1 "$log")"
    case "$last" in
        "anncat.sbatch: wrote $out; report in "*) ;;
        *) fail "$log does not end with the script's 'wrote $out' line but with: $last" ;;
    esac
    if grep -nE 'CANCELLED|Killed|Terminated|forcing job termination|srun: error|error:' "$log"; then
        fail "$log of a successful job has the lines above"
    fi
}

compare_anndata() { # GOT WANT
    "$PYTHON" -W ignore - "$1" "$2" << 'EOF'
import sys
import anndata as ad
from anndata.tests.helpers import assert_equal
got, want = sys.argv[1:]
assert_equal(ad.read_zarr(got), ad.read_zarr(want))
print(f"   {got} equals {want} (anndata {ad.__version__} assert_equal)")
EOF
}

# ------------------------------------------------------------ 4. README example

phase "README example: local anncat concat"
# The options of the README's example command, with absolute input paths
# and without -o and --overwrite (as tests/configs/test_cluster_configs.py).
line="$(grep -m1 -F 'cargo run --release -- concat ' "$repo/README.md")" || fail "README example command not found"
line="${line#*cargo run --release -- concat }"
line="${line%%&&*}"
read -r -a tokens <<< "$line"
example=()
i=0
while [ "$i" -lt "${#tokens[@]}" ]; do
    tok="${tokens[$i]}"
    case "$tok" in
        -o | --output) i=$((i + 2)); continue ;;
        --overwrite) i=$((i + 1)); continue ;;
    esac
    key="${tok%%=*}"
    path="${tok#*=}"
    if [ "$key" != "$tok" ] && [ -e "$repo/$path" ]; then
        tok="$key=$repo/$path"
    elif [ -e "$repo/$tok" ]; then
        tok="$repo/$tok"
    fi
    example+=("$tok")
    i=$((i + 1))
done
echo "   anncat concat ${example[*]}"
anncat concat "${example[@]}" -o "$work/ref/example.zarr" --quiet

phase "README example: sbatch anncat.sbatch (--cpus-per-task=$job_cpus --mem=${job_mem}M)"
out="$work/out/example.zarr"
submit "${example[@]}" -o "$out"
expect_completed job "$jid" 300 "$out"
[ ! -e "$ANNCAT_SHARED/anncat-$jid/cluster.json" ] || fail "the cluster file (with the secret) was left behind"
[ -z "$(work_pids)" ] || fail "processes of job $jid still running: $(describe_pids $(work_pids))"

phase "README example: compare with the local run"
compare_anndata "$out" "$work/ref/example.zarr"

# ------------------------------------------------------------ 5. scancel, --resume

phase "bigger inputs (Python anndata)"
"$PYTHON" -W ignore - "$work/big" << 'EOF'
# Three CSR stores of 100k cells x 2000 genes (2% non-zero), gene sets
# shifted by 10 so that an outer join has work to do.
import sys
import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad
out = sys.argv[1]
rng = np.random.default_rng(19)
n_obs, n_vars = 100_000, 2_000
for i in range(3):
    X = sp.random(n_obs, n_vars, density=0.02, format="csr", dtype=np.float32, random_state=rng)
    obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice(["T", "B", "NK", "mono"], n_obs)),
                        "n_counts": rng.random(n_obs)}, index=[f"c{i}_{j}" for j in range(n_obs)])
    var = pd.DataFrame(index=[f"g{j}" for j in range(10 * i, 10 * i + n_vars)])
    ad.AnnData(X=X, obs=obs, var=var).write_zarr(f"{out}/big{i + 1}.zarr")
EOF
# Each store ten times (3M cells): ~7000 tasks of 1 MiB chunks.
big=()
for r in $(seq 10); do
    for b in 1 2 3; do big+=("r${r}b$b=$work/big/big$b.zarr"); done
done
big+=(--join outer --label batch --index-unique - --memory-limit 256MiB --chunk-mib 1)
du -sh "$work/big" | sed 's/^/   /'

phase "bigger job: local anncat concat"
anncat concat "${big[@]}" -o "$work/ref/big.zarr" --quiet

phase "bigger job: sbatch, then a plain scancel once tasks are journaled"
out="$work/out/big.zarr"
journal="$out.partial/.anncat/journal"
submit "${big[@]}" -o "$out"
for _ in $(seq 1200); do
    [ -s "$journal" ] && break
    case "$(job_state "$jid")" in PENDING | CONFIGURING | RUNNING) ;; *) break ;; esac
    sleep 0.1
done
[ -s "$journal" ] || fail "job $jid ($(job_state "$jid")) journaled no task in 120 s"
sleep 1
[ "$(job_state "$jid")" = RUNNING ] || fail "job $jid is $(job_state "$jid") before scancel: make the bigger job bigger"
echo "   journal $(stat -c %s "$journal") bytes; scancel $jid"
scancel "$jid"
st="$(wait_job "$jid" 120)"
log="$work/job-$jid.out"
sed 's/^/   | /' "$log"
[ "$st" = CANCELLED ] || fail "job $jid ended $st after scancel"
[ -z "$(work_pids)" ] || fail "processes of job $jid still running after scancel: $(describe_pids $(work_pids))"
grep -qF "anncat.sbatch: job $jid stopped by a signal; $out.partial is kept: submit the same command with --resume added to finish it" "$log" ||
    fail "$log lacks the --resume hint after scancel"
[ -d "$out.partial" ] && [ ! -e "$out" ] || fail "after scancel: expected $out.partial and no $out"

phase "bigger job: sbatch the same command with --resume"
submit "${big[@]}" -o "$out" --resume
expect_completed "resumed job" "$jid" 600 "$out"
"$PYTHON" - "$ANNCAT_SHARED/anncat-$jid/report.json" << 'EOF'
import json, sys
tasks = json.load(open(sys.argv[1]))["tasks"]
reused = sum("(journaled)" in t["label"] for t in tasks)
assert reused > 0, "the resumed run reused no journaled task"
print(f"   the resumed run reused {reused} journaled task(s)")
EOF

phase "bigger job: compare with the local run (byte for byte)"
diff -r "$out" "$work/ref/big.zarr" > "$work/big.diff" 2>&1 ||
    fail "the resumed output differs from the local run: $(head -n 20 "$work/big.diff")"
echo "   $out is byte-identical to the local run ($(du -sh "$out" | cut -f1))"
end_phase
