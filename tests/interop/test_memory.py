"""Memory limits (issue 16 item 4): every worker's peak resident set (the
kernel's VmHWM, in the run report) stays within its --memory-limit plus the
32 MiB of runtime the README allows, on inputs several times the limit; an
input stored in chunks too large to decode within the limit is refused
before any work, in one line naming the input, the element and the limit
it needs."""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import scipy.sparse as sp
import zarr

from conftest import run_anncat
from test_concat import assert_matches_python, expected_results

LIMIT_MIB = 96
RUNTIME_MIB = 32  # what the README says a worker's RSS may exceed its limit by


def _dense(i: int, n: int) -> ad.AnnData:
    rng = np.random.default_rng(i)
    a = ad.AnnData(rng.random((n, 2500)))  # float64: 20 MB per 1000 rows
    a.obs_names = [f"d{i}_{k}" for k in range(n)]
    a.var_names = [f"g{k}" for k in range(2500)]
    return a


def _sparse(i: int, n: int) -> ad.AnnData:
    x = sp.random(n, 4000, density=0.05, format="csr", dtype=np.float32, random_state=i)
    a = ad.AnnData(x)
    a.obs_names = [f"s{i}_{k}" for k in range(n)]
    a.var_names = [f"g{k}" for k in range(4000)]
    return a


def _write(adatas, d, stem):
    ad.settings.zarr_write_format = 2
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, a in enumerate(adatas):
            p = d / f"{stem}{i}.zarr"
            a.write_zarr(p, chunks=(500, 2500) if not sp.issparse(a.X) else None)
            paths.append(p)
    return paths


def test_every_worker_stays_within_its_memory_limit(tmp_path):
    cases = {
        "dense": _write([_dense(0, 4000), _dense(1, 3000)], tmp_path, "dense"),  # 140 MB
        "sparse": _write([_sparse(0, 20000), _sparse(1, 15000)], tmp_path, "sparse"),  # 84 MB
    }
    for name, paths in cases.items():
        out, rep = tmp_path / f"{name}.zarr", tmp_path / f"{name}.json"
        run_anncat("concat", *paths, "-o", out, "--workers", "2", "--memory-limit",
                   f"{LIMIT_MIB}MiB", "--report", rep, "--quiet")
        workers = json.loads(rep.read_text())["workers"]
        assert len(workers) == 2, workers
        for w in workers:
            peak_mib = w["peak_rss"] / 2**20
            assert 0 < peak_mib <= LIMIT_MIB + RUNTIME_MIB, f"{name}: worker {w['name']} peaked at {peak_mib:.0f} MiB"
        assert_matches_python(expected_results(paths, {}, tmp_path, 2), ad.read_zarr(out))


def test_an_input_chunk_larger_than_the_limit_is_refused_before_any_work(tmp_path):
    a = _dense(0, 5000)  # 100 MB
    p = tmp_path / "one_chunk.zarr"
    ad.settings.zarr_write_format = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_zarr(p, chunks=(5000, 2500))
    assert zarr.open(p)["X"].chunks == (5000, 2500)
    other = _write([_dense(1, 100)], tmp_path, "small")[0]
    out = tmp_path / "out.zarr"
    proc = run_anncat("concat", p, other, "-o", out, "--memory-limit", "64MiB", "--workers", "2", check=False)
    err = proc.stderr.strip()
    assert proc.returncode != 0
    assert len(err.splitlines()) == 1, err
    assert str(p) in err and "X:" in err and "--memory-limit" in err and "at least" in err, err
    assert not out.exists() and not (tmp_path / "out.zarr.partial" / ".anncat" / "journal").exists(), err
    # The limit it names is enough.
    needed = err.split("at least ")[1].split()[0]
    run_anncat("concat", p, other, "-o", out, "--memory-limit", f"{needed}MiB", "--workers", "2", "--quiet")
    assert ad.read_zarr(out).shape == (5100, 2500)
