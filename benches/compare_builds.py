#!/usr/bin/env python
"""Two builds of anncat side by side, in one run: did a change slow it down?

    venv=$(bash tests/interop/setup_venv.sh 0.12)
    "$venv/bin/python" benches/compare_builds.py --old OLD/anncat --new target/release/anncat \\
        --label "before the second design (876720a)" --results benches/DESIGN_STEP_RESULTS.md

Runs the same concats with each binary, alternating, best of `--repeats`:
the `../shared/bench` sparse and dense sets (generated under
`target/bench-data/` on first use) with 2 local workers and a 256 MiB
limit, and the example data cut into 460 tiny tasks (where per-task
overhead shows). The new build runs twice: as it is (chunks made durable
before they are journaled) and with `ANNCAT_TEST_NO_SYNC=1`, so the
design's own cost is told apart from the cost of durability. Outputs must
be byte-identical to the old build's. Every run starts after a `sync`, so
no run pays for writing back the one before it.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import MEM, REPO, ensure_sets, machine, measure as measure_run  # noqa: E402

CASES = [
    ("CSR obs outer, sparse 5000 (9 files)", "sparse5000", "*_csr.zarr", "outer", []),
    ("dense obs inner, dense 6000 (6 files)", "dense6000", "*_[fs][aq]*_dense.zarr", "inner", []),
    ("example data, 460 tiny tasks", None, None, "outer", ["--chunk-mib", "0.0003"]),
]


def measure(binary: Path, files: list[str], out: Path, join: str, extra: list[str], env_extra: dict) -> dict:
    args = ["--join", join, "--workers", "2", "--memory-limit", MEM, "--quiet", *extra]
    return measure_run(binary, files, out, args, env_extra)


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b, ignore=[".anncat"])
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", type=Path, required=True)
    p.add_argument("--new", type=Path, default=REPO / "target" / "release" / "anncat")
    p.add_argument("--label", default="the old build")
    p.add_argument("--data", type=Path, default=REPO / "target" / "bench-data")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--results", type=Path, default=REPO / "benches" / "DESIGN_STEP_RESULTS.md")
    args = p.parse_args()
    ensure_sets(args.data)
    work = args.data / "runs-builds"
    work.mkdir(parents=True, exist_ok=True)
    variants = {"old": (args.old, {}), "new": (args.new, {}), "new_nosync": (args.new, {"ANNCAT_TEST_NO_SYNC": "1"})}
    rows = []
    for case, set_name, glob, join, extra in CASES:
        if set_name is None:
            files = [str(REPO / "examples" / "data" / f"batch{i}.zarr") for i in (1, 2, 3)]
        else:
            files = sorted(str(f) for f in (args.data / set_name).glob(glob))
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for name, (binary, env) in variants.items():
                rec = measure(binary, files, work / f"{name}.zarr", join, extra, env)
                if name not in best or rec["wall_s"] < best[name]["wall_s"]:
                    best[name] = rec
        identical = same_tree(work / "old.zarr", work / "new.zarr")
        rows.append({"case": case, **{f"{k}_s": v["wall_s"] for k, v in best.items()},
                     **{f"{k}_rss": v["peak_rss_mib"] for k, v in best.items()}, "identical": identical})
        print(json.dumps(rows[-1]), flush=True)
    lines = [
        f"# This build against {args.label}\n",
        f"Produced by `benches/compare_builds.py` on {machine()}; warm page cache; best of {args.repeats}, builds alternating; "
        f"`anncat concat --workers 2 --memory-limit {MEM}`. \"new, no flushes\" is this build with "
        "`ANNCAT_TEST_NO_SYNC=1` (measurement only): the change's own cost apart from durable chunks. "
        "Peak RSS: the largest single process.\n",
        "| case | old (s) | new (s) | new, no flushes (s) | new ÷ old | no flushes ÷ old | peak RSS old / new (MiB) | outputs identical |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['old_s']:.2f} | {r['new_s']:.2f} | {r['new_nosync_s']:.2f} | "
            f"{r['new_s'] / r['old_s']:.2f}x | {r['new_nosync_s'] / r['old_s']:.2f}x | "
            f"{r['old_rss']:.0f} / {r['new_rss']:.0f} | {'yes' if r['identical'] else 'NO'} |")
    args.results.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
