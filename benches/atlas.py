#!/usr/bin/env python
"""The atlas benchmark: anncat against the fastest Python configuration
(anndata 0.13.4 on Python 3.12 with zarrs' codec pipeline) on many small
inputs, at 0.2M, 0.8M and 3.2M cells, to see how each grows with the cells.

    venv=$(bash tests/interop/setup_venv.sh) && "$venv/bin/python" benches/atlas.py

The inputs (made once, in target/bench-data/atlas, by anndata 0.12 as zarr
v2): 128 stores of 25,000 cells each and the same 3,000 genes; X is CSR
float32 with 15 entries per cell on average; obs has 7 columns (a unique
barcode string per cell, two categoricals, two integer and two float
columns), var 2 (gene ids, a categorical feature type). The scales take the
first 8, 32 and 128 of them. Both tools run with default options (anncat:
`--memory-limit 256MiB`, the local cluster of one worker per core; Python:
`concat_on_disk` writing zarr v2, as its inputs). Each scale checks that the
two outputs agree. anncat's run report gives the coordinating process' peak
RSS and its time before the graph starts, and each worker's peak RSS.

Writes benches/ATLAS_RESULTS.md and the plot benches/atlas_scaling.png
(wall time and per-process peak memory against cells).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ANNCAT, BENCH, MEM, REPO, machine, run  # noqa: E402
from compare import last_json, python_rss, same_output  # noqa: E402

CELLS = 25_000
GENES = 3_000
PER_CELL = 15  # stored entries of X per cell, on average
SCALES = (8, 32, 128)


def make_input(path: Path, i: int) -> None:
    """One input: CELLS cells of batch `i`, the shared GENES genes."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(i)
    x = sp.random(CELLS, GENES, density=PER_CELL / GENES, format="csr", dtype=np.float32, random_state=rng,
                  data_rvs=lambda k: rng.integers(1, 50, k).astype(np.float32))
    x.sort_indices()
    counts = np.diff(x.indptr)
    letters = np.array(list("ACGT"))[rng.integers(0, 4, (CELLS, 12))]
    obs = pd.DataFrame(
        {
            "barcode": [f"{''.join(letters[j])}-{i}-{j}" for j in range(CELLS)],
            "cell_type": pd.Categorical(rng.choice([f"type{k}" for k in range(40)], CELLS)),
            "donor": pd.Categorical([f"donor{i % 16}"] * CELLS),
            "n_genes": counts.astype(np.int32),
            "total_counts": np.asarray(x.sum(axis=1)).ravel().astype(np.int64),
            "pct_mito": rng.random(CELLS).astype(np.float32) * 10,
            "score": rng.normal(size=CELLS),
        },
        index=[f"b{i}-c{j}" for j in range(CELLS)],
    )
    var = pd.DataFrame(
        {
            "gene_ids": [f"ENSG{g:011d}" for g in range(GENES)],
            "feature_type": pd.Categorical(["Gene Expression"] * GENES),
        },
        index=[f"gene{g}" for g in range(GENES)],
    )
    ad.AnnData(X=x, obs=obs, var=var).write_zarr(path)


def ensure_atlas(data: Path) -> list[str]:
    """The 128 inputs, made on first use."""
    data.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(max(SCALES)):
        path = data / f"atlas_{i:03d}.zarr"
        if not (path / ".zattrs").is_file():
            print(f"writing {path.name} ...", flush=True)
            make_input(path, i)
        paths.append(str(path))
    return paths


def peer_python() -> tuple[str, dict]:
    """The Python 3.12 venv with anndata 0.13.4 and zarrs, and its environment."""
    venv = REPO / "target" / "bench-venv-0.13-zarrs"
    run(["bash", str(REPO / "tests" / "interop" / "setup_venv.sh"), "0.13"], env={**os.environ, "ANNCAT_VENV": str(venv)})
    py = str(venv / "bin" / "python")
    if subprocess.run([py, "-c", "import zarrs"], capture_output=True).returncode != 0:
        run([py, "-m", "pip", "install", "-q", "zarrs"])
    return py, {**os.environ, "ANNCAT_BENCH_ZARRS_PIPELINE": "1"}


def warm(files: list[str]) -> None:
    for f in files:
        for path in Path(f).rglob("*"):
            if path.is_file():
                path.read_bytes()


def run_anncat(files: list[str], work: Path, workers: int | None = None) -> dict:
    """One measured anncat run; its wall time (process start to exit) and
    the report's figures."""
    out, rec, report = work / "ours.zarr", work / "ours.jsonl", work / "report.json"
    rec.unlink(missing_ok=True)
    report.unlink(missing_ok=True)
    extra = ["--workers", str(workers)] if workers is not None else []
    run([sys.executable, str(BENCH / "measure_cmd.py"), "--case", "atlas", "--out", str(out), "--keep-output",
         "--in", *files, "--json-out", str(rec), "--",
         str(ANNCAT), "concat", *files, "-o", str(out), "--join", "outer", "--memory-limit", MEM,
         "--report", str(report), "--quiet", *extra])
    ours = last_json(rec)
    rep = json.loads(report.read_text())
    return {
        "wall_s": ours["wall_s"],
        "coordinator_mib": rep["coordinator_peak_rss"] / 2**20,
        "worker_mib": max(w["peak_rss"] for w in rep["workers"]) / 2**20,
        "worker_limit_mib": min(w["memory_limit"] for w in rep["workers"]) / 2**20,
        "before_graph_s": rep["phases"]["before_graph_s"],
        "graph_s": rep["phases"]["graph_s"],
    }


def plot(rows: list[dict], path: Path) -> None:
    """Wall time and per-process peak memory against cells."""
    try:
        import matplotlib
    except ImportError:
        run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"])
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r["cells"] / 1e6 for r in rows]
    fig, (t, m) = plt.subplots(1, 2, figsize=(11, 4.2))
    t.plot(cells, [r["py_s"] for r in rows], "o-", label="anndata 0.13.4 + zarrs: concat_on_disk")
    t.plot(cells, [r["ours"]["wall_s"] for r in rows], "o-", label="anncat: wall")
    t.plot(cells, [r["ours"]["before_graph_s"] for r in rows], "o--", label="anncat: before the graph")
    t.set(xlabel="cells (millions)", ylabel="seconds", title="Wall time")
    t.legend()
    m.plot(cells, [r["py_rss"] for r in rows], "o-", label="Python: peak RSS")
    m.plot(cells, [r["ours"]["coordinator_mib"] for r in rows], "o-", label="anncat: coordinating process")
    m.plot(cells, [r["ours"]["worker_mib"] for r in rows], "o-", label="anncat: largest worker")
    m.axhline(rows[0]["ours"]["worker_limit_mib"], color="grey", ls=":", label="worker --memory-limit")
    m.set(xlabel="cells (millions)", ylabel="MiB", title="Peak memory per process")
    m.legend()
    for ax in (t, m):
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "target" / "bench-data" / "atlas")
    p.add_argument("--results", type=Path, default=REPO / "benches" / "ATLAS_RESULTS.md")
    p.add_argument("--plot", type=Path, default=REPO / "benches" / "atlas_scaling.png")
    args = p.parse_args()
    if not ANNCAT.is_file():
        run(["cargo", "build", "--release", "--locked"], cwd=REPO)
    paths = ensure_atlas(args.data)
    peer, peer_env = peer_python()
    work = REPO / "target" / "bench-data" / "runs-atlas"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in SCALES:
        files = paths[:n]
        warm(files)
        print(f"{n} inputs: python ...", flush=True)
        ref_out, ref_json = work / "ref.zarr", work / "ref.jsonl"
        ref_json.unlink(missing_ok=True)
        run([peer, str(REPO / "benches" / "run_anndata_h5ad.py"), *files, "--out", str(ref_out), "--case", "atlas",
             "--axis", "0", "--join", "outer", "--keep-output", "--json-out", str(ref_json)], env=peer_env)
        ref = last_json(ref_json)
        print(f"{n} inputs: anncat ...", flush=True)
        ours = run_anncat(files, work)
        row = {"inputs": n, "cells": n * CELLS, "in_mib": ref["in_bytes"] / 2**20, "py_s": ref["wall_s"],
               "py_rss": python_rss(ref), "ours": ours, "agree": same_output(ref_out, work / "ours.zarr")}
        if n == SCALES[1]:
            row["one_worker"] = run_anncat(files, work, workers=1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    plot(rows, args.plot)
    out = [
        "# The atlas benchmark: 0.2M, 0.8M and 3.2M cells\n",
        f"Produced by `venv=$(bash tests/interop/setup_venv.sh) && \"$venv/bin/python\" benches/atlas.py` on "
        f"{machine()}; warm page cache; one run per cell of the table.\n",
        f"Inputs: {max(SCALES)} zarr v2 stores by anndata 0.12 of {CELLS:,} cells and the same {GENES:,} genes "
        f"(X CSR float32, {PER_CELL} entries per cell; obs: a unique barcode string per cell and 6 more columns). "
        "Python: anndata 0.13.4 on Python 3.12 with zarrs' codec pipeline, `concat_on_disk(join=\"outer\")` writing "
        f"zarr v2 (wall time of the call). anncat: `anncat concat --join outer --memory-limit {MEM}` on the "
        f"default local cluster ({os.cpu_count()} workers), wall time of the process. Before the graph: "
        "anncat's planning and annotation work in the coordinating process, and the cluster's start.\n",
        f"![wall time and memory against cells]({args.plot.name})\n",
        "| inputs | cells | input MiB | Python s | anncat s | speed-up | anncat before the graph | "
        "Python peak RSS MiB | anncat coordinator MiB | anncat largest worker MiB | same output |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for r in rows:
        o = r["ours"]
        out.append(
            f"| {r['inputs']} | {r['cells'] / 1e6:.1f}M | {r['in_mib']:.0f} | {r['py_s']:.2f} | {o['wall_s']:.2f} | "
            f"{r['py_s'] / o['wall_s']:.1f}x | {o['before_graph_s']:.2f} s ({100 * o['before_graph_s'] / o['wall_s']:.0f}%) | "
            f"{r['py_rss']:.0f} | {o['coordinator_mib']:.0f} | {o['worker_mib']:.0f} | {r['agree']} |"
        )
    first, last = rows[0], rows[-1]
    growth = last["cells"] / first["cells"]
    mid = rows[1]
    out += [
        "",
        "## Growth",
        "",
        f"From {first['cells'] / 1e6:.1f}M to {last['cells'] / 1e6:.1f}M cells ({growth:.0f}x): anncat's wall time grew "
        f"{last['ours']['wall_s'] / first['ours']['wall_s']:.1f}x, Python's {last['py_s'] / first['py_s']:.1f}x; "
        f"anncat's coordinating process {last['ours']['coordinator_mib'] / first['ours']['coordinator_mib']:.1f}x "
        f"({first['ours']['coordinator_mib']:.0f} → {last['ours']['coordinator_mib']:.0f} MiB), its largest worker "
        f"{last['ours']['worker_mib'] / first['ours']['worker_mib']:.1f}x.",
        "",
        f"1 → {os.cpu_count()} workers at {mid['cells'] / 1e6:.1f}M cells: "
        f"{mid['one_worker']['wall_s']:.2f} s → {mid['ours']['wall_s']:.2f} s "
        f"({mid['one_worker']['wall_s'] / mid['ours']['wall_s']:.2f}x; the graph alone "
        f"{mid['one_worker']['graph_s'] / mid['ours']['graph_s']:.2f}x).",
    ]
    args.results.write_text("\n".join(out) + "\n")
    print(args.results.read_text())
    return 0 if all(r["agree"] == "yes" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
