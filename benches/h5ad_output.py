#!/usr/bin/env python
"""What writing `-o OUT.h5ad` costs against `-o OUT.zarr`, measured in one run.

    venv=$(bash tests/interop/setup_venv.sh) && "$venv/bin/python" benches/h5ad_output.py

An `.h5ad` output is staged as an unsharded zarr store in `OUT.h5ad.partial`
by the workers, then streamed into one HDF5 file by a single writer (a
window of chunks decoded in parallel, written in order). This runs the same
concat to zarr v2 and to h5ad on the `../shared/bench` sparse and dense sets
(generated under `target/bench-data/` on first use), alternating the two,
best of `--repeats`, and records wall time, the ratio, peak RSS (the largest
single process: `anncat concat` itself, which runs the h5ad writer) and the
output size, in benches/H5AD_RESULTS.md. anndata reads both outputs and
they must hold the same X and names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ANNCAT, MEM, REPO, ensure_sets, machine, measure as measure_run, run  # noqa: E402

# (case, set, glob, join)
CASES = [
    ("CSR obs outer, sparse 5000 (9 files)", "sparse5000", "*_csr.zarr", "outer"),
    ("dense obs inner (6 files)", "dense6000", "*_[fs][aq]*_dense.zarr", "inner"),
]


def measure(files: list[str], out: Path, join: str, json_out: Path) -> dict:
    """One run of anncat concat under ../shared/bench/measure_cmd.py."""
    return measure_run(ANNCAT, files, out, ["--join", join, "--memory-limit", MEM, "--quiet"])


def same(zarr_out: Path, h5ad_out: Path) -> str:
    """'yes', or what differs between the two outputs (read by anndata)."""
    import warnings

    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = ad.read_zarr(zarr_out), ad.read_h5ad(h5ad_out)
    if a.shape != b.shape or not a.obs_names.equals(b.obs_names) or not a.var_names.equals(b.var_names):
        return "shape or names differ"
    xa, xb = a.X, b.X
    if sp.issparse(xa) != sp.issparse(xb):
        return "sparse vs dense"
    if sp.issparse(xa):
        return "yes" if (xa != xb).nnz == 0 else "X differs"
    return "yes" if np.array_equal(np.asarray(xa), np.asarray(xb), equal_nan=True) else "X differs"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "target" / "bench-data")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--results", type=Path, default=REPO / "benches" / "H5AD_RESULTS.md")
    args = p.parse_args()
    if not ANNCAT.is_file():
        run(["cargo", "build", "--release", "--locked"])
    ensure_sets(args.data)
    work = args.data / "runs-h5ad"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for case, set_name, glob, join in CASES:
        files = sorted(str(f) for f in (args.data / set_name).glob(glob))
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for ext in ("zarr", "h5ad"):
                rec = measure(files, work / f"out.{ext}", join, work / f"{ext}.jsonl")
                if ext not in best or rec["wall_s"] < best[ext]["wall_s"]:
                    best[ext] = rec
        z, h = best["zarr"], best["h5ad"]
        rows.append({
            "case": case, "files": len(files), "in_mib": z["in_bytes"] / 2**20,
            "zarr_s": z["wall_s"], "h5ad_s": h["wall_s"],
            "zarr_rss": z["peak_rss_mib"], "h5ad_rss": h["peak_rss_mib"],
            "zarr_mib": z["out_bytes"] / 2**20, "h5ad_mib": h["out_bytes"] / 2**20,
            "same": same(work / "out.zarr", work / "out.h5ad"),
        })
        print(json.dumps(rows[-1]), flush=True)
    lines = [
        "# h5ad output against zarr output\n",
        f"Produced by `benches/h5ad_output.py` on {machine()}; warm page cache; best of {args.repeats}, zarr and h5ad runs alternating. "
        f"`anncat concat --memory-limit {MEM}` with the default local cluster. Peak RSS: the largest single "
        "process (for h5ad, `anncat concat` runs the HDF5 writer itself after the workers stop). "
        "The h5ad output is uncompressed, as anndata's `write_h5ad` writes it by default; zarr v2 uses "
        "anncat's default codec.\n",
        "| case | inputs (MiB) | zarr (s) | h5ad (s) | h5ad ÷ zarr | peak RSS zarr / h5ad (MiB) | output zarr / h5ad (MiB) | same X and names |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['in_mib']:.0f} | {r['zarr_s']:.2f} | {r['h5ad_s']:.2f} | "
            f"{r['h5ad_s'] / r['zarr_s']:.2f}x | {r['zarr_rss']:.0f} / {r['h5ad_rss']:.0f} | "
            f"{r['zarr_mib']:.0f} / {r['h5ad_mib']:.0f} | {r['same']} |")
    args.results.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
