#!/usr/bin/env python3
"""Read / write throughput of anncat's zarr I/O against zarr-python.

Writes a dense and a sparse AnnData store with anndata (zarr v2 and v3),
then times, on the same stores:
  - zarr-python: read every array of the element whole (`arr[...]`), and
    write the same data into a fresh array with the same chunks and codecs;
  - anncat: `cargo bench --bench io_throughput` (decode every chunk, then
    encode the same chunks into a fresh store).
Throughput is decoded MiB per second, best of N runs, warm page cache.
Prints a markdown table and writes it to benches/IO_RESULTS.md.

Usage: python benches/io_vs_zarr_python.py [--workdir DIR] [--repeats N]
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import zarr

REPO = Path(__file__).resolve().parent.parent


def make_stores(workdir):
    rng = np.random.default_rng(0)
    dense = ad.AnnData(X=rng.normal(size=(40000, 1000)).astype(np.float32))
    X = sp.random(200000, 2000, density=0.02, format="csr", dtype=np.float32, random_state=1)
    X.data[:] = rng.integers(1, 50, X.nnz)
    sparse = ad.AnnData(X=X)
    stores = {}
    for name, a in (("dense", dense), ("sparse", sparse)):
        for fmt in (2, 3):
            path = workdir / f"{name}_v{fmt}.zarr"
            if not path.exists():
                ad.settings.zarr_write_format = fmt
                a.write_zarr(path)
            stores[(name, fmt)] = path
    return stores


def arrays_of(path, element):
    node = zarr.open(path / element, mode="r")
    if isinstance(node, zarr.Array):
        return [element]
    return [f"{element}/{k}" for k in ("data", "indices", "indptr")]


def zarr_python(path, element, repeats):
    names = arrays_of(path, element)
    best_read, data = float("inf"), {}
    for _ in range(repeats):
        t = time.perf_counter()
        data = {n: zarr.open_array(path / n, mode="r")[...] for n in names}
        best_read = min(best_read, time.perf_counter() - t)
    mib = sum(d.nbytes for d in data.values()) / 2**20
    best_write = float("inf")
    for r in range(repeats):
        out = Path(tempfile.mkdtemp(dir=path.parent))
        try:
            t = time.perf_counter()
            for n in names:
                src = zarr.open_array(path / n, mode="r")
                kwargs = dict(shape=src.shape, chunks=src.chunks, dtype=src.dtype, zarr_format=src.metadata.zarr_format)
                if src.metadata.zarr_format == 2:
                    kwargs["compressors"] = src.compressors
                else:
                    kwargs["compressors"] = src.compressors
                    kwargs["shards"] = src.shards
                dst = zarr.create_array(out / n, **kwargs)
                dst[...] = data[n]
            best_write = min(best_write, time.perf_counter() - t)
        finally:
            shutil.rmtree(out)
    return {"tool": "zarr-python", "mib": mib, "read_s": best_read, "write_s": best_write,
            "read_mib_s": mib / best_read, "write_mib_s": mib / best_write}


def anncat(path, element, repeats):
    cmd = ["cargo", "bench", "--quiet", "--bench", "io_throughput", "--", str(path), element, str(repeats)]
    out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", default=str(REPO / "target" / "bench-io"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "--bench", "io_throughput"], cwd=REPO, check=True)
    stores = make_stores(workdir)
    rows = []
    for (name, fmt), path in sorted(stores.items()):
        py = zarr_python(path, "X", args.repeats)
        rs = anncat(path, "X", args.repeats)
        rows.append((name, fmt, py, rs))
        print(f"{name} v{fmt}: zarr-python read {py['read_mib_s']:.0f} MiB/s write {py['write_mib_s']:.0f} MiB/s; "
              f"anncat read {rs['read_mib_s']:.0f} MiB/s write {rs['write_mib_s']:.0f} MiB/s", flush=True)
    lines = [
        "# anncat zarr I/O throughput vs zarr-python",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"zarr-python {zarr.__version__}, anndata {ad.__version__}. Best of {args.repeats} runs, warm page cache.",
        "Element X of stores written by anndata: dense 40000×1000 float32 (v2 blosc-lz4 / v3 zstd),",
        "sparse CSR 200000×2000 at density 0.02 (data, indices, indptr). MiB = decoded bytes.",
        "Produced by `python benches/io_vs_zarr_python.py` (see benches/README.md).",
        "",
        "| element | zarr | MiB | zarr-python read MiB/s | anncat read MiB/s | read ratio | zarr-python write MiB/s | anncat write MiB/s | write ratio |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, fmt, py, rs in rows:
        lines.append(
            f"| {name} X | v{fmt} | {rs['mib']:.0f} | {py['read_mib_s']:.0f} | {rs['read_mib_s']:.0f} | "
            f"{rs['read_mib_s'] / py['read_mib_s']:.2f}x | {py['write_mib_s']:.0f} | {rs['write_mib_s']:.0f} | "
            f"{rs['write_mib_s'] / py['write_mib_s']:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "benches" / "IO_RESULTS.md").write_text(text)


if __name__ == "__main__":
    main()
