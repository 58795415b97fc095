"""Awkward arrays in obsm (concatenated along obs) and varm (along var):
anncat's output equals anndata.concat of the same inputs, for zarr v2, v3
and h5ad inputs, both joins; what anncat does not concatenate is refused in
one line naming the element."""

from __future__ import annotations

import awkward as ak
import anndata as ad
import numpy as np
import pytest
from anndata.tests.helpers import assert_equal

from conftest import run_anncat
from test_concat import cli_args, expected_results, read_store


def _adata(axis: str, along: list[str], other: list[str] | None = None):
    """An AnnData of ones stacked along `axis` (obs or var): `along` names
    that axis, `other` (default three names) the other; with its mapping
    along the axis (obsm or varm)."""
    if other is None:
        other = ["g0", "g1", "g2"] if axis == "obs" else ["c0", "c1", "c2"]
    x = np.ones((len(along), len(other)), dtype=np.float32)
    a = ad.AnnData(X=x if axis == "obs" else x.T.copy())
    if axis == "obs":
        a.obs_names, a.var_names = along, other
        return a, a.obsm
    a.var_names, a.obs_names = along, other
    return a, a.varm


def _inputs(axis: str, seed: int = 0) -> list[ad.AnnData]:
    """Four inputs (one with zero rows) holding the same three awkward
    types: ragged ints, records with a ragged field, optional lists."""
    rng = np.random.default_rng(seed)
    adatas = []
    for i, n in enumerate((4, 0, 7, 5)):
        m_rows = max(n, 3)  # a zero-row input: a slice, which keeps the form
        counts = rng.integers(0, 4, size=m_rows)
        ragged = ak.unflatten(rng.integers(0, 9, size=int(counts.sum())).astype(np.int64), counts)
        rec = ak.zip({"a": np.arange(m_rows, dtype=np.int64),
                      "b": ak.unflatten(np.arange(int(counts.sum()), dtype=np.float64) / 2, counts)},
                     depth_limit=1)
        opt = ak.Array([None if k % 3 == 1 else [k, k + 1] for k in range(m_rows)])
        ragged, rec, opt = ragged[:n], rec[:n], opt[:n]
        a, m = _adata(axis, [f"c{i}_{k}" for k in range(n)])
        m["ragged"] = ragged
        m["rec"] = rec
        m["opt"] = opt
        adatas.append(a)
    return adatas


def _write(adatas, d, fmt):
    paths = []
    for i, a in enumerate(adatas):
        if fmt == "h5ad":
            p = d / f"in{i}.h5ad"
            a.write_h5ad(p)
        else:
            ad.settings.zarr_write_format = fmt
            p = d / f"in{i}.zarr"
            a.write_zarr(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("join", ["inner", "outer"])
@pytest.mark.parametrize("axis", ["obs", "var"])
@pytest.mark.parametrize("fmt", [2, 3, "h5ad"])
def test_awkward_arrays_concatenate_as_anndata_does(tmp_path, fmt, axis, join):
    paths = _write(_inputs(axis), tmp_path, fmt)
    opts = dict(axis=axis, join=join)
    out = tmp_path / "out.zarr"
    run_anncat("concat", *paths, "-o", out, "--quiet", "--chunk-mib", "0.001", *cli_args(opts))
    got = ad.read_zarr(out)
    in_memory, stored = expected_results(paths, opts, tmp_path, 2 if fmt == "h5ad" else fmt)
    assert_equal(stored, got)
    m = got.obsm if axis == "obs" else got.varm
    assert sorted(m.keys()) == ["opt", "ragged", "rec"]
    assert ak.to_list(m["ragged"]) == ak.to_list((in_memory.obsm if axis == "obs" else in_memory.varm)["ragged"])


def test_h5ad_output_holds_the_awkward_arrays(tmp_path):
    paths = _write(_inputs("obs", seed=3), tmp_path, 3)
    out = tmp_path / "out.h5ad"
    run_anncat("concat", *paths, "-o", out, "--quiet")
    _, stored = expected_results(paths, {}, tmp_path, 3, ext="h5ad")
    assert_equal(stored, read_store(out))


def _differing_inputs(axis: str, seed: int = 5) -> list[ad.AnnData]:
    """Three inputs whose awkward arrays differ in type the ways awkward
    merges: ragged lists of int64 / float32 / fixed size 2 (regular), one
    input lacking `ragged` and one lacking `only0`; records whose fields
    come in another order, with one more field in input 1 and int / float
    values; optional values next to plain ones."""
    rng = np.random.default_rng(seed)
    adatas = []
    for i, n in enumerate((4, 3, 5)):
        a, m = _adata(axis, [f"c{i}_{k}" for k in range(n)])
        counts = rng.integers(0, 4, size=n)
        values = rng.integers(0, 9, size=int(counts.sum()))
        if i == 0:
            m["ragged"] = ak.unflatten(values.astype(np.int64), counts)
            m["only0"] = ak.Array([[k] * (k % 3) for k in range(n)])
            m["rec"] = ak.zip({"a": np.arange(n, dtype=np.int64), "b": np.arange(n) / 2}, depth_limit=1)
            m["opt"] = ak.Array([None if k % 2 else k for k in range(n)])
        elif i == 1:
            m["rec"] = ak.zip({"b": np.arange(n, dtype=np.int32), "a": np.arange(n) / 4,
                               "c": np.arange(n, dtype=np.int8)}, depth_limit=1)
            m["opt"] = ak.Array([float(k) for k in range(n)])
        else:
            m["ragged"] = ak.Array(np.arange(2 * n, dtype=np.float32).reshape(n, 2))
            m["rec"] = ak.zip({"a": np.arange(n, dtype=np.int16), "b": np.arange(n) * 1.5}, depth_limit=1)
            m["opt"] = ak.Array([k for k in range(n)])
        adatas.append(a)
    return adatas


@pytest.mark.parametrize("axis", ["obs", "var"])
@pytest.mark.parametrize("fmt", [2, 3, "h5ad"])
def test_awkward_types_merge_as_anndata_merges_them(tmp_path, fmt, axis):
    """Outer join: the keys some inputs lack become option types, numbers
    promote, regular and ragged lists make ragged lists (records with
    different fields, a union in awkward, are left out here: see the
    refusal test). Inner join: records keep their common fields."""
    adatas = _differing_inputs(axis)
    outer = [a.copy() for a in adatas]
    for a in outer:
        (a.obsm if axis == "obs" else a.varm).pop("rec", None)
    for a in adatas:
        # One-dimensional: anndata's inner join fails on it (axis=1 too deep).
        (a.obsm if axis == "obs" else a.varm).pop("opt", None)
    for join, inputs in (("outer", outer), ("inner", adatas)):
        d = tmp_path / join
        d.mkdir()
        paths = _write(inputs, d, fmt)
        opts = dict(axis=axis, join=join)
        out = d / "out.zarr"
        run_anncat("concat", *paths, "-o", out, "--quiet", "--chunk-mib", "0.001", *cli_args(opts))
        got = ad.read_zarr(out)
        in_memory, stored = expected_results(paths, opts, d, 2 if fmt == "h5ad" else fmt)
        assert_equal(stored, got)
        m = got.obsm if axis == "obs" else got.varm
        expected_m = in_memory.obsm if axis == "obs" else in_memory.varm
        assert sorted(m) == sorted(expected_m), join
        for key in m:
            assert m[key].type == expected_m[key].type, (join, key)
            assert ak.to_list(m[key]) == ak.to_list(expected_m[key]), (join, key)
        if join == "outer":
            assert str(m["ragged"].type).endswith("option[var * float64]"), m["ragged"].type
            # The same as an h5ad.
            h5 = d / "out.h5ad"
            run_anncat("concat", *paths, "-o", h5, "--quiet", *cli_args(opts))
            _, stored_h5 = expected_results(paths, opts, d, 2, ext="h5ad")
            assert_equal(stored_h5, read_store(h5))
        else:
            assert m["rec"].fields == ["a", "b"]


def test_what_anncat_does_not_concatenate_is_refused_naming_it(tmp_path):
    # Records whose fields differ, under an outer join: awkward makes a
    # union type of them.
    adatas = _differing_inputs("obs")
    paths = _write(adatas, tmp_path, 2)
    out = tmp_path / "out.zarr"
    proc = run_anncat("concat", *paths, "-o", out, "--join", "outer", check=False)
    assert proc.returncode != 0 and "obsm/rec" in proc.stderr and "union" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()
    # A list next to a number: a union too.
    adatas = _inputs("obs")
    adatas[0].obsm["ragged"] = ak.Array(np.arange(adatas[0].n_obs, dtype=np.int64))
    (tmp_path / "forms").mkdir()
    paths = _write(adatas, tmp_path / "forms", 2)
    proc = run_anncat("concat", *paths, "-o", out, check=False)
    assert proc.returncode != 0 and "obsm/ragged" in proc.stderr and "union" in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("merge", ["same", "unique", "first", "only"])
@pytest.mark.parametrize("join", ["inner", "outer"])
@pytest.mark.parametrize("axis", ["obs", "var"])
def test_awkward_arrays_in_the_merged_mapping(tmp_path, axis, join, merge):
    """Awkward arrays in varm when stacking cells (obsm when stacking
    genes), under every --merge strategy: reindexed onto the joined axis as
    anndata reindexes them (an option type; a name an input lacks takes its
    last row, as ak.pad_none(...)[-1] does), kept as ak.almost_equal says."""
    rng = np.random.default_rng(11)
    sets = (["g0", "g1", "g2"], ["g1", "g2", "g3"], ["g0", "g1", "g2"], ["g0", "g1", "g2"])
    adatas = []
    for i, genes in enumerate(sets):
        a, _ = _adata(axis, [f"c{i}_{k}" for k in range(2)], genes)
        m = a.varm if axis == "obs" else a.obsm
        g = [int(name[1:]) for name in genes]
        m["ragged"] = ak.Array([[k] * (k + 1) for k in g])
        m["rec"] = ak.zip({"a": np.array(g, dtype=np.int64), "b": ak.Array([[k / 2] * k for k in g])},
                          depth_limit=1)
        m["opt"] = ak.Array([None if k == 1 else [float(k)] for k in g])
        if i == 3:
            m["ragged"] = ak.Array([[k + 100] for k in g])  # differs from input 0
        if i == 0:
            m["only0"] = ak.Array([[k, k] for k in g])
        adatas.append(a)
    paths = _write(adatas, tmp_path, 2)
    opts = dict(axis=axis, join=join, merge=merge)
    out = tmp_path / "out.zarr"
    run_anncat("concat", *paths, "-o", out, "--quiet", *cli_args(opts))
    got = ad.read_zarr(out)
    in_memory, stored = expected_results(paths, opts, tmp_path, 2)
    assert_equal(stored, got)
    m = got.varm if axis == "obs" else got.obsm
    expected_m = in_memory.varm if axis == "obs" else in_memory.obsm
    assert sorted(m) == sorted(expected_m)
    for key in m:
        assert m[key].type == expected_m[key].type, key
        assert ak.to_list(m[key]) == ak.to_list(expected_m[key]), key
