#!/usr/bin/env python
"""What making chunks durable costs (issue 16 item 6), measured in one run.

    venv=$(bash tests/interop/setup_venv.sh 0.12) && "$venv/bin/python" benches/durability.py

Each task of a concat flushes what it wrote (`fdatasync` of each file)
before it is reported done and journaled, and the finished output is
flushed before and after its rename into place. This runs the same concat
with the flushes and without them (`ANNCAT_TEST_NO_SYNC=1`, a switch for
this measurement only), alternating, best of `--repeats`, on the
`../shared/bench` sparse and dense sets (generated under
`target/bench-data/` on first use), and on the example data cut into
hundreds of tiny tasks (the worst case: a flush per few KiB), and writes
benches/DURABILITY_RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ANNCAT, MEM, REPO, ensure_sets, machine, measure as measure_run  # noqa: E402

CASES = [
    ("CSR obs outer, sparse 5000 (9 files)", "sparse5000", "*_csr.zarr", "outer", []),
    ("dense obs inner (6 files)", "dense6000", "*_[fs][aq]*_dense.zarr", "inner", []),
    ("example data, 460 tiny tasks", None, None, "outer", ["--chunk-mib", "0.0003"]),
]


def measure(files: list[str], out: Path, join: str, extra: list[str], sync: bool) -> dict:
    env = {} if sync else {"ANNCAT_TEST_NO_SYNC": "1"}
    return measure_run(ANNCAT, files, out, ["--join", join, "--memory-limit", MEM, "--quiet", *extra], env, keep=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "target" / "bench-data")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--results", type=Path, default=REPO / "benches" / "DURABILITY_RESULTS.md")
    args = p.parse_args()
    if not ANNCAT.is_file():
        raise SystemExit(f"{ANNCAT}: build it first (cargo build --release --locked)")
    ensure_sets(args.data)
    work = args.data / "runs-durability"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for case, set_name, glob, join, extra in CASES:
        if set_name is None:
            files = [str(REPO / "examples" / "data" / f"batch{i}.zarr") for i in (1, 2, 3)]
        else:
            files = sorted(str(f) for f in (args.data / set_name).glob(glob))
        best: dict[bool, dict] = {}
        for _ in range(args.repeats):
            for sync in (True, False):
                rec = measure(files, work / "out.zarr", join, extra, sync)
                if sync not in best or rec["wall_s"] < best[sync]["wall_s"]:
                    best[sync] = rec
        on, off = best[True], best[False]
        rows.append({"case": case, "files": len(files), "in_mib": on["in_bytes"] / 2**20,
                     "sync_s": on["wall_s"], "nosync_s": off["wall_s"],
                     "out_mib": on["out_bytes"] / 2**20})
        print(json.dumps(rows[-1]), flush=True)
    lines = [
        "# The cost of durable chunks\n",
        f"Produced by `benches/durability.py` on {machine()}; warm page cache; best of {args.repeats}, runs with and without the flushes "
        f"alternating. `anncat concat --memory-limit {MEM}` with the default local cluster, zarr v2 output. "
        "With flushes (the default): chunks of 64 KiB or more written behind the task with `O_DIRECT`, an `fdatasync` of each file a task wrote "
        "and an `fsync` of their directories before it is reported done, and the output flushed around its final rename. "
        "Without: `ANNCAT_TEST_NO_SYNC=1`, for this measurement only: no flush, and chunks written behind into the page cache, "
        "where they stay when the run ends (as Python's output does).\n",
        "| case | inputs (MiB) | output (MiB) | durable (s) | without flushes (s) | cost |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['in_mib']:.0f} | {r['out_mib']:.0f} | {r['sync_s']:.2f} | "
            f"{r['nosync_s']:.2f} | {(r['sync_s'] / r['nosync_s'] - 1) * 100:+.0f}% |")
    args.results.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
