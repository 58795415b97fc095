#!/usr/bin/env python
"""anncat vs Python's concat_on_disk, side by side, on the same files.

One command (from the repository root):

    venv=$(bash tests/interop/setup_venv.sh) && "$venv/bin/python" benches/compare.py

creates the ../shared/bench data sets (unless present), runs Python's
`anndata.experimental.concat_on_disk` (the reference, via
../shared/bench/run_anndata.py) and `anncat concat` (with `--memory-limit
256MiB` per worker), each --repeat times alternating, on the same inputs in
the same run, then anncat once more, untimed, with `--report` (each
process' peak RSS); checks that the two outputs hold the same matrix and
names, and writes a table to benches/RESULTS.md.

--quick runs only the sparse 5000 sets (zarr v2, v3, h5ad, gzip h5ad);
--only TEXT only the cases whose name holds TEXT (write them with --results
elsewhere, so RESULTS.md keeps the whole table). --peer anndata-0.13-zarrs
compares with anndata 0.13.4 on Python 3.12 with zarrs' codec pipeline, the
fastest Python configuration, instead of this interpreter's anndata.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ANNCAT, BENCH, MEM, REPO, run  # noqa: E402
from bench_common import SETS as COMMON_SETS  # noqa: E402

# (name, generator args): the sets every bench script uses, and two more.
SETS = {
    **COMMON_SETS,
    "sparse10000": ["--size", "10000", "--runs", "3", "--kinds", "csr,csc"],
    "sparse5000v3": ["--size", "5000", "--runs", "3", "--kinds", "csr", "--zarr-format", "3"],
}

# Sets made here from another set: (name, source set, source glob,
# write_h5ad compression). The gzip set is the format atlases are published in.
H5AD_SETS = {
    "sparse5000h5ad": ("sparse5000", "*_csr.zarr", None),
    "sparse5000h5adgz": ("sparse5000", "*_csr.zarr", "gzip"),
    "sparse10000h5adgz": ("sparse10000", "*_csr.zarr", "gzip"),
}

# (case, set, file globs, axis, join[, extra anncat arguments])
CASES = [
    ("CSR obs inner, same var (6 files)", "sparse10000", ["*_fat_csr.zarr", "*_square_csr.zarr"], 0, "inner"),
    ("CSR obs outer (9 files, reindexing)", "sparse10000", ["*_csr.zarr"], 0, "outer"),
    ("CSR obs outer, inputs not in the page cache", "sparse10000", ["*_csr.zarr"], 0, "outer"),
    ("CSC var inner (9 files)", "sparse10000", ["*_csc.zarr"], 1, "inner"),
    ("CSC var outer (9 files)", "sparse10000", ["*_csc.zarr"], 1, "outer"),
    # concat_on_disk keeps CSC along var; anndata.concat (anncat's default) gives CSR.
    ("CSC var inner, --sparse-format csc", "sparse10000", ["*_csc.zarr"], 1, "inner", ["--sparse-format", "csc"]),
    ("CSC var outer, --sparse-format csc", "sparse10000", ["*_csc.zarr"], 1, "outer", ["--sparse-format", "csc"]),
    ("CSR obs outer, sparse 5000", "sparse5000", ["*_csr.zarr"], 0, "outer"),
    ("dense obs (6 files)", "dense6000", ["*_fat_dense.zarr", "*_square_dense.zarr"], 0, "inner"),
    ("dense var (6 files)", "dense6000", ["*_tall_dense.zarr", "*_square_dense.zarr"], 1, "inner"),
    ("zarr v3 CSR obs outer (9 files)", "sparse5000v3", ["*_csr.zarr"], 0, "outer"),
    ("h5ad CSR obs outer, sparse 5000 (9 files)", "sparse5000h5ad", ["*_csr.h5ad"], 0, "outer"),
    ("gzip h5ad CSR obs outer, sparse 5000 (9 files)", "sparse5000h5adgz", ["*_csr.h5ad"], 0, "outer"),
    ("gzip h5ad CSR obs outer, sparse 10000 (9 files)", "sparse10000h5adgz", ["*_csr.h5ad"], 0, "outer"),
]
# Cases whose inputs are evicted from the page cache before every run (of
# each tool, and of the floor): an atlas larger than memory is read from
# disk. The others start with their inputs read once, in the page cache.
COLD_CASES = {"CSR obs outer, inputs not in the page cache"}

QUICK = {"sparse5000", "sparse5000v3", "sparse5000h5ad", "sparse5000h5adgz"}

# Executor scaling, 1 -> 2 workers: (case, set, file glob). The gzip sets
# are the CPU-bound ones (a third of their CPU inflates gzip). The zarr
# sets stream more memory per byte of work (LZ4, shuffles, page-cache
# copies): with both cores busy their CPU time grows by 7-12% on this
# machine, where a compute loop's does not grow and a 64 MiB memcpy's
# grows by 15% (writing the output to tmpfs instead of the disk scales the
# same).
# The sparse 10000 gzip set is four times the work of the sparse 5000 one
# for the same fixed start-up (about 0.1 s in which one core plans).
SCALING_CASES = [
    ("gzip h5ad CSR obs outer, sparse 5000", "sparse5000h5adgz", "*_csr.h5ad"),
    ("gzip h5ad CSR obs outer, sparse 10000", "sparse10000h5adgz", "*_csr.h5ad"),
    ("zarr CSR obs outer, sparse 5000", "sparse5000", "*_csr.zarr"),
    ("zarr CSR obs outer, sparse 10000", "sparse10000", "*_csr.zarr"),
]


def last_json(path: Path) -> dict:
    lines = [l for l in path.read_text().splitlines() if l.strip()]
    return json.loads(lines[-1])


def python_rss(ref: dict) -> float:
    """The reference's peak RSS, sampled over its process tree. (Its
    getrusage figure is not used: Linux carries ru_maxrss over fork and exec,
    so it would include this script's own peak.)"""
    return max(ref.get("peak_tree_sampled_mib") or 0.0, ref.get("children_maxrss_mib") or 0.0)


def median_run(runs: list, wall) -> object:
    """The run of median wall time (`wall` reads it off a run); of an even
    number, the slower of the middle two."""
    return sorted(runs, key=wall)[len(runs) // 2]


def floor_seconds(files: list[str], cold: bool = False) -> float:
    """Best of 2 runs of benches/floor.rs on the case's inputs: every chunk
    of their X read, decoded, encoded with the codec anncat writes and
    written once, on all cores, with no concatenation (`cold`: the inputs
    evicted from the page cache before each run)."""
    times = []
    for _ in range(2):
        if cold:
            evict(files)
        times.append(floor_on_cores(files))
    return min(times)


def floor_on_cores(files: list[str], cores: int | None = None) -> float:
    """One run of benches/floor.rs on the case's inputs: on every core, or
    pinned to the first `cores` (its thread pool sizes itself to them)."""
    res = run([*pinned_to(cores), "cargo", "bench", "--quiet", "--locked", "--bench", "floor", "--", "X", *files], cwd=REPO)
    return last_json_text(res.stdout)["seconds"]


def evict(files: list[str]) -> None:
    """Drops the inputs' pages from the page cache (posix_fadvise
    DONTNEED on every file, after a sync: their pages are clean), so the
    next run reads them from disk."""
    os.sync()
    for f in files:
        for path in [Path(f)] if Path(f).is_file() else Path(f).rglob("*"):
            if path.is_file():
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def disk_irq_core(path: Path) -> int | None:
    """The core that takes most of the interrupts of the block device
    holding `path` (its queues' lines in /proc/interrupts), or None when
    that cannot be told (no such device, or no interrupts counted)."""
    import re

    try:
        st = os.stat(path)
        dev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}").resolve()
        if (dev / "partition").exists():
            dev = dev.parent
        name = (dev / "device").resolve().name  # virtio1, nvme0, ...
        lines = Path("/proc/interrupts").read_text().splitlines()
    except OSError:
        return None
    ncpu = len(lines[0].split())
    totals = [0] * ncpu
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > ncpu and re.match(rf"{re.escape(name)}(\D|$)", fields[-1]):
            for c in range(ncpu):
                if fields[1 + c].isdigit():
                    totals[c] += int(fields[1 + c])
    return max(range(ncpu), key=totals.__getitem__) if any(totals) else None


# The core a one-core run is pinned to: the one that takes the interrupts
# of the disk the outputs go to. On any other core, the kernel's work of
# completing the run's writes and reads would run on a core the run was
# not given (here every interrupt of the disk goes to one core), and a
# "one-core" run would use part of a second one.
ONE_CORE = disk_irq_core(REPO / "target")


def pinned_to(cores: int | None) -> list[str]:
    """The `taskset` prefix running a command on `cores` cores (none for
    every core): one core is the disk's interrupt core ([`ONE_CORE`]),
    more are the first `cores`."""
    if not cores:
        return []
    if cores == 1 and ONE_CORE is not None:
        return ["taskset", "-c", str(ONE_CORE)]
    return ["taskset", "-c", ",".join(str(c) for c in range(cores))]


def independent_pair(files: list[str], work: Path) -> float:
    """Wall time of two independent one-worker concats of `files` started
    at once, one pinned to [`ONE_CORE`] and one to another core: the
    slower one's. Twice the one-core time over this is the machine's own
    speed-up of this work from a second core (memory bandwidth, caches and
    the disk are shared); no executor can scale past it."""
    one = ONE_CORE if ONE_CORE is not None else 0
    cores = [one, next(c for c in range(os.cpu_count() or 2) if c != one)]
    outs = [work / f"pair{i}.zarr" for i in range(2)]
    run(["rm", "-rf", *map(str, outs)])
    os.sync()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["taskset", "-c", str(c), str(ANNCAT), "concat", *files, "-o", str(o),
                               "--join", "outer", "--memory-limit", MEM, "--workers", "1", "--quiet"])
             for c, o in zip(cores, outs)]
    try:
        for p in procs:
            p.wait()
        elapsed = time.perf_counter() - t0  # when the slower one ended
        if any(p.returncode != 0 for p in procs):
            raise SystemExit(f"anncat failed in an independent pair ({[p.returncode for p in procs]})")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        run(["rm", "-rf", *map(str, outs)])
    return elapsed


def last_json_text(text: str) -> dict:
    return json.loads([l for l in text.splitlines() if l.startswith("{")][-1])


def same_output(a: Path, b: Path) -> str:
    """'yes', or what differs (compared with anndata)."""
    import warnings

    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = ad.read_zarr(a), ad.read_zarr(b)
    if x.shape != y.shape:
        return f"shape {x.shape} vs {y.shape}"
    # As values: anndata 0.13 stores names as nullable strings (read back as
    # pandas' "string" dtype), anncat as the inputs' writer did.
    if list(map(str, x.obs_names)) != list(map(str, y.obs_names)) or list(
        map(str, x.var_names)
    ) != list(map(str, y.var_names)):
        return "names differ"
    xa, ya = x.X, y.X
    if sp.issparse(xa) != sp.issparse(ya):
        return "sparse vs dense"
    if sp.issparse(xa):
        if (xa != ya).nnz:
            return "X differs"
    elif not np.array_equal(np.asarray(xa), np.asarray(ya), equal_nan=True):
        return "X differs"
    return "yes"


def targets(rows: list[dict], scaling: dict[str, list[tuple[int, float, float]]],
            pair_scaling: dict[str, float]) -> list[str]:
    """The performance issue's targets that this table measures, case by
    case: met or not, from this run's rows (the atlas targets are in
    benches/atlas.py's results)."""
    done = [r for r in rows if "failed" not in r]

    def names(pred) -> str:
        hit = [r["case"] for r in done if pred(r)]
        return "; ".join(hit) if hit else "none"

    def target(what: str, applies, met) -> str:
        return (f"- {what} — met by: {names(lambda r: applies(r) and met(r))}. "
                f"Not met by: {names(lambda r: applies(r) and not met(r))}.")

    limit = float(MEM.removesuffix("MiB"))
    def two(name: str) -> str:
        runs = {w: pinned for w, pinned, _ in scaling.get(name, [])}
        if 1 not in runs or 2 not in runs:
            return "not measured"
        x = runs[1] / runs[2]
        machine = f"; the machine's own: {2 * runs[1] / pair_scaling[name]:.2f}x" if name in pair_scaling else ""
        return f"{x:.2f}x on 1 → 2 cores ({'met' if x >= 1.8 else 'not met'}{machine})"
    return [
        "",
        "## Targets",
        "",
        target("At least 3x Python on zarr CSR along obs (inner and outer)",
               lambda r: r["case"].startswith("CSR obs"), lambda r: r["py_s"] / r["ours_s"] >= 3),
        target("At least 2x Python on gzip h5ad", lambda r: "gzip h5ad" in r["case"],
               lambda r: r["py_s"] / r["ours_s"] >= 2),
        target(f"Every anncat process at or under --memory-limit ({MEM})", lambda r: True,
               lambda r: r["proc_rss"] <= limit),
        target("Scheduler CPU share under 5%", lambda r: True, lambda r: r["coord_cpu_pct"] < 5),
        "- 1 → 2 workers at least 1.8x on the CPU-bound cases — "
        + "; ".join(f"{name}: {two(name)}" for name, _, _ in SCALING_CASES) + ".",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "target" / "bench-data")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--results", type=Path, default=REPO / "benches" / "RESULTS.md")
    p.add_argument("--only", help="run only the cases whose name contains this text")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each tool per case (alternating); the median counts (default 3)")
    p.add_argument("--peer", choices=("anndata-0.12", "anndata-0.13-zarrs"), default="anndata-0.12",
                   help="the Python to compare with: this interpreter's anndata (0.12 from setup_venv.sh), "
                        "or anndata 0.13.4 on Python 3.12 with zarrs' codec pipeline (a venv made in "
                        "target/bench-venv-0.13-zarrs)")
    args = p.parse_args()
    py = sys.executable
    if not ANNCAT.is_file():
        run(["cargo", "build", "--release", "--locked"], cwd=REPO)
    try:
        import distributed  # noqa: F401  (the dense reference runs on a dask cluster)
    except ImportError:
        # distributed pins its dask release; pip moves dask to the newest
        # pair the index has (distributed may lag dask's latest release).
        run([py, "-m", "pip", "install", "-q", "distributed"])
    work = args.data / "runs"
    work.mkdir(parents=True, exist_ok=True)
    sets = QUICK if args.quick else set(SETS) | set(H5AD_SETS)
    for name in sorted(sets - set(H5AD_SETS)):
        d = args.data / name
        if not (d / "manifest.json").is_file():
            print(f"generating {name} ...", flush=True)
            run([py, str(BENCH / "gen_data.py"), *SETS[name], "--out", str(d), "--seed", "0"])
    for name in sorted(sets & set(H5AD_SETS)):
        source, glob, compression = H5AD_SETS[name]
        d = args.data / name
        d.mkdir(parents=True, exist_ok=True)
        import anndata as ad

        for src in sorted((args.data / source).glob(glob)):
            dst = d / (src.stem + ".h5ad")
            if not dst.is_file():
                print(f"writing {dst.name} ...", flush=True)
                ad.read_zarr(src).write_h5ad(dst, compression=compression)
    ref_py, ref_env = py, dict(os.environ)
    if args.peer == "anndata-0.13-zarrs":
        venv = REPO / "target" / "bench-venv-0.13-zarrs"
        run(["bash", str(REPO / "tests" / "interop" / "setup_venv.sh"), "0.13"],
            env={**os.environ, "ANNCAT_VENV": str(venv)})
        ref_py = str(venv / "bin" / "python")
        probe = subprocess.run([ref_py, "-c", "import zarrs, distributed"], capture_output=True)
        if probe.returncode != 0:
            run([ref_py, "-m", "pip", "install", "-q", "zarrs", "distributed"])
        ref_env["ANNCAT_BENCH_ZARRS_PIPELINE"] = "1"
    rows = []
    for case, set_name, globs, axis, join, *extra in CASES:
        extra = extra[0] if extra else []
        if set_name not in sets or (args.only and args.only not in case):
            continue
        files = sorted({str(f) for g in globs for f in (args.data / set_name).glob(g)})
        ref_out, our_out = work / "ref.zarr", work / "ours.zarr"
        ref_json, report = work / "ref.jsonl", work / "report.json"
        ref_json.unlink(missing_ok=True)
        cold = case in COLD_CASES
        # Warm page cache for both tools: read every input once.
        for f in [] if cold else files:
            for path in [Path(f)] if Path(f).is_file() else Path(f).rglob("*"):
                if path.is_file():
                    path.read_bytes()
        wrapped = set_name in H5AD_SETS or args.peer != "anndata-0.12"
        runner = REPO / "benches" / "run_anndata_h5ad.py" if wrapped else BENCH / "run_anndata.py"
        # Each tool runs --repeat times, alternating, and the median run of
        # each counts: one run on a shared 2-core machine is too noisy.
        refs, ours_runs, failed = [], [], None
        ours_cmd = [str(ANNCAT), "concat", *files, "-o", str(our_out), "--axis", str(axis), "--join", join,
                    "--memory-limit", MEM, "--quiet", *extra]
        for attempt in range(args.repeat):
            print(f"{case}: python ({attempt + 1}/{args.repeat}) ...", flush=True)
            ref_json.unlink(missing_ok=True)
            # Each run starts with nothing dirty in the page cache: anncat
            # flushes what it wrote and its output around the final
            # rename (syncfs), which would otherwise also write out the
            # previous run's output.
            os.sync()
            if cold:
                evict(files)
            run([ref_py, str(runner), *files, "--out", str(ref_out), "--case", case,
                 "--axis", str(axis), "--join", join, "--keep-output", "--json-out", str(ref_json)],
                env=ref_env)
            refs.append(last_json(ref_json))
            print(f"{case}: anncat ({attempt + 1}/{args.repeat}) ...", flush=True)
            run(["rm", "-rf", str(our_out)])
            os.sync()
            if cold:
                evict(files)
            # Timed here, not under measure_cmd.py: its sampler walks the
            # process table every 50 ms, a tax of 0.1-0.3 s on a 2-core
            # machine that both anncat workers keep busy. The command a user
            # runs, without --report (drawing its timeline takes 30-60 ms
            # after the output is done).
            t0 = time.perf_counter()
            measured = subprocess.run(ours_cmd, text=True, capture_output=True)
            took = time.perf_counter() - t0
            if measured.returncode != 0 or not our_out.is_dir():
                failed = (measured.stderr.strip().splitlines() or ["failed"])[-1]
                break
            ours_runs.append({"wall_s": took})
        rep = {}
        if failed is None:
            # One more run, untimed, with --report: each process' peak RSS
            # (VmHWM; wait4's ru_maxrss of a spawned child starts from its
            # spawner's, this script's) and the coordinator's CPU time.
            report.unlink(missing_ok=True)
            run(["rm", "-rf", str(our_out)])
            run([*ours_cmd, "--report", str(report)])
            rep = json.loads(report.read_text())
        ref = median_run(refs, lambda r: r["wall_s"])
        if failed is not None:
            rows.append({"case": case, "in_mib": ref["in_bytes"] / 2**20, "py_s": ref["wall_s"],
                         "py_rss": python_rss(ref), "failed": failed})
            print(json.dumps(rows[-1]), flush=True)
            continue
        ours = median_run(ours_runs, lambda r: r["wall_s"])
        worker_peak = max((w["peak_rss"] for w in rep.get("workers", [])), default=0) / 2**20
        main_peak = rep.get("coordinator_peak_rss", 0) / 2**20
        agree = same_output(ref_out, our_out)
        print(f"{case}: floor ...", flush=True)
        floor = floor_seconds(files, cold)
        rows.append({
            "case": case, "in_mib": ref["in_bytes"] / 2**20,
            "py_s": ref["wall_s"], "ours_s": ours["wall_s"], "floor_s": floor,
            "py_rss": max(python_rss(r) for r in refs), "worker_rss": worker_peak,
            "proc_rss": max(main_peak, worker_peak), "agree": agree,
            "coord_cpu_pct": 100.0 * rep.get("coordinator_cpu_s", 0.0)
            / max(rep.get("wall_s", ours["wall_s"]) * (os.cpu_count() or 1), 1e-9),
        })
        print(json.dumps(rows[-1]), flush=True)
    # Scaling of the executor: the same concat with 1 and 2 local workers,
    # alternating, best of --repeat each.
    scaling: dict[str, list[tuple[int, float, float]]] = {}
    # The floor's own speed-up on the same inputs and cores: what the
    # machine gives this work with no executor at all.
    floor_scaling: dict[str, list[float]] = {}
    # What the machine gives this work on a second core with no executor
    # between: two independent one-worker runs at once, each on its own
    # core (the slower one's time).
    pair_scaling: dict[str, float] = {}
    for name, data_set, pattern in SCALING_CASES:
        files = sorted(str(f) for f in (args.data / data_set).glob(pattern))
        if not files:
            continue  # a set this run did not make (--only)
        # Each worker count runs twice: on as many cores as workers (the
        # whole process tree pinned with taskset: what a worker adds is a
        # core's work), and unpinned, where one worker's writer and flush
        # threads, the kernel's I/O and the coordinator use the idle core.
        times: dict[tuple[int, bool], list[float]] = {(w, p): [] for w in (1, 2) for p in (True, False)}
        pair_times: list[float] = []
        floor_times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.repeat):
            for workers in (1, 2):
                for pinned in (True, False):
                    out = work / "scale.zarr"
                    run(["rm", "-rf", str(out)])
                    os.sync()
                    pin = pinned_to(workers if pinned else None)
                    t0 = time.perf_counter()
                    run([*pin, str(ANNCAT), "concat", *files, "-o", str(out), "--join", "outer",
                         "--memory-limit", MEM, "--workers", str(workers), "--quiet"])
                    times[(workers, pinned)].append(time.perf_counter() - t0)
            for cores in (1, 2):
                floor_times[cores].append(floor_on_cores(files, cores))
            pair_times.append(independent_pair(files, work))
        scaling[name] = [(w, min(times[(w, True)]), min(times[(w, False)])) for w in (1, 2)]
        floor_scaling[name] = [min(floor_times[c]) for c in (1, 2)]
        pair_scaling[name] = min(pair_times)
        print(f"scaling: {name}: {scaling[name]}", flush=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    out = [
        "# anncat vs concat_on_disk\n",
        f"Produced by `venv=$(bash tests/interop/setup_venv.sh) && \"$venv/bin/python\" benches/compare.py"
        f"{' --quick' if args.quick else ''}{' --peer ' + args.peer if args.peer != 'anndata-0.12' else ''}"
        f"{' --only ' + repr(args.only) if args.only else ''}{f' --repeat {args.repeat}' if args.repeat != 3 else ''}` "
        f"on {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores ({cpu}), {int(mem) // 2**20} GiB, {platform.platform()}; warm page cache (the inputs read once before a case), "
        "except in the case whose inputs are not in the page cache (evicted with posix_fadvise DONTNEED before every run of each tool and of the floor: "
        "an atlas larger than memory, read from disk); "
        f"each tool ran {args.repeat} times per case, alternating, and the times are the medians.",
        f"Python ({'anndata 0.13.4 on Python 3.12 with zarrs codec pipeline' if args.peer != 'anndata-0.12' else 'anndata 0.12.19'}): "
        "anndata's `concat_on_disk` (../shared/bench/run_anndata.py; its wall time excludes interpreter start-up). "
        f"anncat: `anncat concat --memory-limit {MEM}` with the default local cluster ({os.cpu_count()} workers); "
        "its wall time includes process start-up, and the timed runs have no `--report` (drawing its timeline "
        "is not part of a concat). Scheduler CPU share: CPU time of the coordinating process "
        "(scheduler + client) while the graph ran, over that time × cores, from one more, untimed run with "
        "`--report`. RSS: Python's peak; anncat's largest single process (every worker and the coordinating "
        "process), from the `--report` run. "
        "Floor: `cargo bench --bench floor -- X FILES` (best of 2), every chunk of the inputs' X read, decoded, "
        "encoded with the codec anncat writes and written once on all cores, with no concatenation at all; "
        "anncat ÷ floor is how far anncat is from that limit. anncat's output is on stable storage when it "
        "returns (each task's files flushed by `fdatasync` before it counts as done, the output flushed around its "
        "rename); Python's output, and the floor's, may still be in the page cache.\n",
        "| case | input MiB | Python s | anncat s | speed-up | floor s | anncat ÷ floor | Python ÷ floor "
        "| Python peak RSS MiB | anncat max per-process RSS MiB | anncat input MiB/s | scheduler CPU share | same output |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for r in rows:
        if "failed" in r:
            out.append(
                f"| {r['case']} | {r['in_mib']:.0f} | {r['py_s']:.2f} | failed | | | | | {r['py_rss']:.0f} | | | | {r['failed']} |"
            )
            continue
        out.append(
            f"| {r['case']} | {r['in_mib']:.0f} | {r['py_s']:.2f} | {r['ours_s']:.2f} | {r['py_s'] / r['ours_s']:.1f}x | "
            f"{r['floor_s']:.2f} | {r['ours_s'] / r['floor_s']:.2f}x | {r['py_s'] / r['floor_s']:.1f}x | "
            f"{r['py_rss']:.0f} | {r['proc_rss']:.0f} | {r['in_mib'] / r['ours_s']:.0f} | {r['coord_cpu_pct']:.1f}% | {r['agree']} |"
        )
    out += targets(rows, scaling, pair_scaling)
    out += [
        "",
        "## Executor scaling",
        "",
        "The same concat (outer, 9 files) with 1 and 2 local workers of one task thread each, "
        f"alternating, best of {args.repeat} runs; on as many cores as workers (`taskset`, the whole process tree: "
        "what the target counts; "
        + (f"one core is core {ONE_CORE}, the one that takes the output disk's interrupts, so that the kernel's "
           "work of completing the run's I/O is counted in the one-core run as it is in the two-core one"
           if ONE_CORE is not None else "one core is core 0")
        + "), and unpinned, where a single worker's writer and flush threads, the "
        "kernel's block I/O and the coordinator run on the core it leaves idle. Process start, "
        "opening the inputs and planning (one core, HDF5 serves one call at a time) and the final "
        "flush and rename do not get faster with workers: about 0.1 s on nine gzip h5ad inputs, "
        "a tenth of the sparse 5000 run on two workers and a thirtieth of the sparse 10000 one. "
        f"Floor: `benches/floor.rs` on the same inputs and as many cores (best of {args.repeat}), the same decoding, "
        "encoding and writing with no executor, for comparison: its output is left in the page cache, "
        "so its times, and its speed-up, swing with the kernel's writeback; and it reads h5ad "
        "through the HDF5 library, one call at a time, "
        "where anncat reads and inflates raw chunks itself:",
        "",
        "| case | workers | wall s, cores = workers | speed-up | wall s, unpinned | speed-up "
        "| floor s, cores = workers | floor speed-up |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, runs in scaling.items():
        floors = floor_scaling[name]
        for (workers, pinned, free), floor in zip(runs, floors):
            out.append(f"| {name} | {workers} | {pinned:.2f} | {runs[0][1] / pinned:.2f}x "
                       f"| {free:.2f} | {runs[0][2] / free:.2f}x | {floor:.2f} | {floors[0] / floor:.2f}x |")
    out += [
        "",
        "What a second core gives this work on this machine, with no executor between: two independent "
        "one-worker runs of the same concat started at once, each pinned to its own core "
        f"(best of {args.repeat}; the slower run's wall time). Twice the one-core time over that is the "
        "machine's speed-up: the two runs share memory bandwidth, caches and the disk, and no executor "
        "can scale past it. The last column is anncat's two-worker speed-up over the machine's:",
        "",
        "| case | one worker, one core s | two independent runs at once s | machine's speed-up "
        "| anncat 2 workers speed-up | share of the machine's |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for name, runs in scaling.items():
        one, two_workers, pair = runs[0][1], runs[1][1], pair_scaling[name]
        machine = 2 * one / pair
        out.append(f"| {name} | {one:.2f} | {pair:.2f} | {machine:.2f}x | {one / two_workers:.2f}x "
                   f"| {one / two_workers / machine:.0%} |")
    args.results.write_text("\n".join(out) + "\n")
    print(args.results.read_text())
    return 0 if all(r.get("agree") == "yes" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
