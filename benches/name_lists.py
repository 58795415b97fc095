#!/usr/bin/env python
"""Many inputs with long gene lists: what the coordinating process and each
worker hold when every input brings its own list of names along the other
axis, against when they all share one.

    venv=$(bash tests/interop/setup_venv.sh) && "$venv/bin/python" benches/name_lists.py

The inputs (made once, in target/bench-data/name-lists, by anndata as zarr
v2): 256 stores of 50 cells and 30,000 genes each (X CSR float32, 1%
dense). In the "shared" set every input has the same genes; in the
"shifted" set input k has genes k*40 .. k*40 + 30,000, so the outer join
has 40,200 names and no two inputs share a list. anncat runs `concat --join
outer --memory-limit 256MiB` on the default local cluster, three times per set;
its run report gives each process' peak RSS and the time before the graph.
Each output is compared with anndata.concat of the same inputs in memory.

Writes benches/NAME_LISTS_RESULTS.md. `--compare-with BIN` also runs another
anncat build on the same inputs, alternating with this one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ANNCAT, MEM, REPO, machine  # noqa: E402
from compare import same_output  # noqa: E402

INPUTS = 256
CELLS = 50
GENES = 30_000
SHIFT = 40
RUNS = 3


def make_set(d: Path, shifted: bool) -> list[str]:
    """The set's inputs, written on first use."""
    import warnings

    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    files = [d / f"in_{k:03d}.zarr" for k in range(INPUTS)]
    if (d / "done").is_file():
        return [str(f) for f in files]
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for k, f in enumerate(files):
        start = k * SHIFT if shifted else 0
        genes = [f"g{i}" for i in range(start, start + GENES)]
        x = sp.random(CELLS, GENES, density=0.01, format="csr", dtype=np.float32, random_state=k)
        obs = pd.DataFrame(index=[f"c{k}_{i}" for i in range(CELLS)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes)).write_zarr(f)
    (d / "done").write_text("")
    return [str(f) for f in files]


def run_anncat(binary: Path, files: list[str], out: Path) -> dict:
    """One run of `binary`: its wall time and the report's figures."""
    report = out.with_name("report.json")
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    subprocess.run([str(binary), "concat", *files, "-o", str(out), "--join", "outer", "--memory-limit", MEM,
                    "--report", str(report), "--quiet"], check=True)
    wall = time.monotonic() - started
    rep = json.loads(report.read_text())
    return {
        "wall_s": wall,
        "before_graph_s": rep["phases"]["before_graph_s"],
        "coordinator_mib": rep["coordinator_peak_rss"] / 2**20,
        "worker_mib": max(w["peak_rss"] for w in rep["workers"]) / 2**20,
    }


def expected(files: list[str], out: Path) -> Path:
    """anndata.concat of the inputs in memory, written as zarr."""
    import warnings

    import anndata as ad

    shutil.rmtree(out, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ad.concat([ad.read_zarr(f) for f in files], join="outer").write_zarr(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "target" / "bench-data" / "name-lists")
    p.add_argument("--results", type=Path, default=REPO / "benches" / "NAME_LISTS_RESULTS.md")
    p.add_argument("--compare-with", type=Path, help="another anncat binary, run on the same inputs")
    args = p.parse_args()
    builds = [("this build", ANNCAT)] + ([("compared", args.compare_with)] if args.compare_with else [])
    work = REPO / "target" / "bench-name-lists"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, shifted in (("shared", False), ("shifted", True)):
        print(f"{name} ...", flush=True)
        files = make_set(args.data / name, shifted)
        ref = expected(files, work / f"{name}-anndata.zarr")
        runs: dict[str, list[dict]] = {b: [] for b, _ in builds}
        same: dict[str, str] = {}
        for _ in range(RUNS):
            for build, binary in builds:
                out = work / f"{name}.zarr"
                runs[build].append(run_anncat(binary, files, out))
                same[build] = same_output(out, ref)
        for build, binary in builds:
            best = sorted(runs[build], key=lambda r: r["wall_s"])[len(runs[build]) // 2]
            shown = binary.resolve()
            shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown
            rows.append((name, f"{build} (`{shown}`)", best, max(r["coordinator_mib"] for r in runs[build]),
                         max(r["worker_mib"] for r in runs[build]), same[build]))
    lines = [
        "# Many inputs, long name lists",
        "",
        "Produced by `venv=$(bash tests/interop/setup_venv.sh) && \"$venv/bin/python\" benches/name_lists.py"
        + (f" --compare-with {args.compare_with}" if args.compare_with else "") + "` "
        f"on {machine()}.",
        "",
        f"{INPUTS} zarr v2 inputs of {CELLS} cells and {GENES:,} genes each (X CSR float32). Shared: every "
        f"input the same genes. Shifted: input k has genes k*{SHIFT} .. k*{SHIFT} + {GENES:,} (an outer join "
        f"of {GENES + SHIFT * (INPUTS - 1):,} names, no two inputs alike). `anncat concat --join outer "
        f"--memory-limit {MEM}`, {RUNS} runs alternating; wall time and time before the graph of the median run, peak RSS the "
        "largest of the runs. Same output: anncat's output against `anndata.concat` of the inputs in memory.",
        "",
        "| set | anncat | wall s | before the graph s | coordinator MiB | largest worker MiB | same output |",
        "|---|---|--:|--:|--:|--:|:-:|",
    ]
    for name, build, best, coord, worker, same in rows:
        lines.append(f"| {name} | {build} | {best['wall_s']:.2f} | {best['before_graph_s']:.2f} | {coord:.0f} | "
                     f"{worker:.0f} | {same} |")
    args.results.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
