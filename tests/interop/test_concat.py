"""`anncat concat` against Python's in-memory `anndata.concat`.

Every case writes its inputs with anndata, runs `anncat concat` on them, and
asserts `assert_equal(expected, read_zarr(out))` where `expected` is
`anndata.concat` of the same inputs loaded in memory with the same options —
either as computed, or written with `write_zarr` and read back (the store
Python would produce: writing turns, e.g., object string columns with missing
values into categoricals). One of the two must match entirely.
"""

import itertools
from pathlib import Path
import scipy.sparse as sp
import random
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from anndata.tests.helpers import assert_equal

from concat_inputs import SETS
from conftest import run_anncat

warnings.filterwarnings("ignore")

FORMATS = {2: False, 3: False}


@pytest.fixture(scope="session")
def input_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("concat_inputs")


_written = {}


def inputs_for(input_dir, name, axis, fmt):
    key = (name, axis, fmt)
    if key not in _written:
        paths = []
        ad.settings.zarr_write_format = fmt
        for i, a in enumerate(SETS[name](axis)):
            p = input_dir / f"{name}_{axis}_v{fmt}_{i}.zarr"
            a.write_zarr(p)
            paths.append(p)
        _written[key] = paths
    return _written[key]


def read_store(path):
    """An AnnData store as anndata reads it, by its extension."""
    return ad.read_h5ad(path) if str(path).endswith(".h5ad") else ad.read_zarr(path)


def expected_results(paths, opts, tmp_path, fmt, ext="zarr"):
    """Python's answer twice: in memory, and as anndata stores it in the
    output's format (`write_zarr` or `write_h5ad`)."""
    adatas = [read_store(p) for p in paths]
    kwargs = {k: v for k, v in opts.items() if v is not None}
    result = ad.concat(adatas, **kwargs)
    ad.settings.zarr_write_format = fmt
    out = tmp_path / f"expected.{ext}"
    if ext == "h5ad":
        result.write_h5ad(out)
    else:
        result.write_zarr(out)
    return result, read_store(out)


def assert_matches_python(expected, got):
    """`got` must equal Python's result either as computed in memory or as
    Python itself would store it (writing turns, e.g., string columns with
    missing values into categoricals); one of the two must hold entirely."""
    in_memory, stored = expected
    try:
        assert_equal(in_memory, got)
        return in_memory
    except AssertionError:
        assert_equal(stored, got)
        return stored





def cli_args(opts):
    args = []
    for k, v in opts.items():
        if v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        if v is True:
            args.append(flag)
        elif k == "keys":
            args += [flag, ",".join(v)]
        else:
            args += [flag, str(v)]
    return args


def check_case(input_dir, tmp_path, name, fmt, opts, chunk_mib="0.002", ext="zarr"):
    axis = opts.get("axis", "obs")
    paths = inputs_for(input_dir, name, axis, fmt)
    if opts.get("keys") is not None:
        opts = dict(opts, keys=opts["keys"][: len(paths)])
    out = tmp_path / f"out.{ext}"
    run_anncat("concat", *paths, "-o", out, "--chunk-mib", chunk_mib, "--quiet", *cli_args(opts))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*names are not unique")
        got = read_store(out)
    expected = assert_matches_python(expected_results(paths, opts, tmp_path, fmt, ext), got)
    for attr in ("obs", "var"):
        assert list(getattr(expected, attr).columns) == list(getattr(got, attr).columns), attr
        assert getattr(expected, attr).index.name == getattr(got, attr).index.name, attr
    assert sorted(expected.layers.keys(), key=str) == sorted(got.layers.keys(), key=str)
    assert sorted(expected.obsm.keys(), key=str) == sorted(got.obsm.keys(), key=str)
    assert sorted(expected.varm.keys(), key=str) == sorted(got.varm.keys(), key=str)
    assert sorted(expected.obsp.keys(), key=str) == sorted(got.obsp.keys(), key=str)
    assert sorted(expected.varp.keys(), key=str) == sorted(got.varp.keys(), key=str)
    assert sorted(expected.uns.keys(), key=str) == sorted(got.uns.keys(), key=str)
    assert (expected.raw is None) == (got.raw is None)
    if expected.raw is not None:
        assert_equal(expected.raw.to_adata(), got.raw.to_adata())
    if expected.X is not None and hasattr(expected.X, "format"):
        assert got.X.format == "csr"


def matrix():
    """A deterministic sample of the full option product (at least 200 cases)."""
    space = list(itertools.product(
        list(SETS),
        ["obs", "var"],
        ["inner", "outer"],
        [None, "same", "unique", "first", "only"],
        [None, "same", "unique", "first", "only"],
        [(None, None, None), ("batch", None, None), ("batch", ("a", "b", "c"), "-"), (None, None, "_")],
        [None, 0, 1.5],
        [False, True],
        [2, 3],
    ))
    rng = random.Random(20261121)
    cases = rng.sample(space, 240)  # of ~48k combinations
    out = []
    for (name, axis, join, merge, uns_merge, (label, keys, iu), fill, pairwise, fmt) in cases:
        opts = dict(axis=axis, join=join, merge=merge, uns_merge=uns_merge, label=label,
                    keys=list(keys) if keys else None, index_unique=iu, fill_value=fill, pairwise=pairwise)
        cid = (f"{name}-{axis}-{join}-m{merge}-u{uns_merge}-l{label}-k{bool(keys)}-i{iu}-f{fill}"
               f"-p{int(pairwise)}-v{fmt}")
        out.append(pytest.param(name, fmt, opts, id=cid))
    return out


@pytest.mark.parametrize("name,fmt,opts", matrix())
def test_concat_matrix(input_dir, tmp_path, name, fmt, opts):
    check_case(input_dir, tmp_path, name, fmt, opts)


@pytest.mark.parametrize("name,fmt,opts", matrix()[::6])
def test_h5ad_output_matrix(input_dir, tmp_path, name, fmt, opts):
    """A sixth of the matrix again, written as .h5ad (staged in zarr, then
    streamed into one HDF5 file) and read with `read_h5ad`."""
    check_case(input_dir, tmp_path, name, fmt, opts, ext="h5ad")


@pytest.mark.parametrize("chunk_mib", ["0.0005", "0.01", "4"])
def test_chunkings_do_not_change_the_result(input_dir, tmp_path, chunk_mib):
    check_case(input_dir, tmp_path, "mixed", 3, dict(axis="obs", join="outer", merge="same"), chunk_mib)


def write_all(adatas, d, fmt=2):
    ad.settings.zarr_write_format = fmt
    paths = []
    for i, a in enumerate(adatas):
        p = d / f"in{i}.zarr"
        a.write_zarr(p)
        paths.append(p)
    return paths


def compare(paths, tmp_path, opts, fmt=2, chunk_mib="0.002"):
    out = tmp_path / "out.zarr"
    run_anncat("concat", *paths, "-o", out, "--chunk-mib", chunk_mib, "--quiet", *cli_args(opts))
    assert_matches_python(expected_results(paths, opts, tmp_path, fmt), ad.read_zarr(out))


def test_single_input(tmp_path):
    paths = write_all(SETS["mixed"]("obs")[:1], tmp_path)
    compare(paths, tmp_path, dict(join="outer", label="batch", uns_merge="same"))


def test_one_hundred_small_inputs(tmp_path):
    rng = np.random.default_rng(7)
    adatas = []
    for i in range(100):
        n = int(rng.integers(1, 4))
        genes = sorted(rng.choice(20, size=int(rng.integers(3, 8)), replace=False))
        X = rng.poisson(1.0, size=(n, len(genes))).astype(np.float32)
        a = ad.AnnData(X=sp.csr_matrix(X))
        a.obs_names = [f"c{i}_{k}" for k in range(n)]
        a.var_names = [f"g{g}" for g in genes]
        a.obs["depth"] = X.sum(axis=1)
        adatas.append(a)
    paths = write_all(adatas, tmp_path)
    compare(paths, tmp_path, dict(join="outer", label="sample", index_unique="-"))


def test_input_with_zero_rows(tmp_path):
    adatas = SETS["csr_mixed_dtypes"]("obs")
    adatas.insert(1, adatas[0][:0].copy())
    paths = write_all(adatas, tmp_path, fmt=3)
    compare(paths, tmp_path, dict(join="outer", label="batch"), fmt=3)


# Columns of a zero-row input stored with another dtype than the same
# column of the inputs with rows (pandas' empty columns are float64 or
# object; a hand-made store may hold anything).
EMPTY_COLUMN_DTYPES = {
    "int_as_float": ("i", np.array([], dtype=np.float64)),
    "int_as_text": ("i", np.array([], dtype=object)),
    "float_as_int8": ("f", np.array([], dtype=np.int8)),
    "bool_as_float": ("b", np.array([], dtype=np.float64)),
    "bool_as_text": ("b", np.array([], dtype=object)),
    "text_as_float": ("s", np.array([], dtype=np.float64)),
    "category_as_float": ("c", np.array([], dtype=np.float64)),
    "category_of_other_values": ("c", pd.Categorical([], categories=["q"])),
    "int_as_category": ("i", pd.Categorical([], categories=["q"])),
}


@pytest.mark.parametrize("empty_first", [False, True])
@pytest.mark.parametrize("case", sorted(EMPTY_COLUMN_DTYPES))
def test_zero_row_input_with_other_column_dtypes(tmp_path, case, empty_first):
    """anndata.concat's dtype for a column that a zero-row input stores with
    another dtype, or a one-line refusal naming the column where anndata
    cannot store its own answer."""
    column, empty_values = EMPTY_COLUMN_DTYPES[case]
    obs = pd.DataFrame({"i": [1, 2, 3], "f": [0.5, 1.5, 2.5], "b": [True, False, True],
                        "s": ["x", "y", "z"], "c": pd.Categorical(["a", "b", "a"])},
                       index=["c0", "c1", "c2"])
    full = ad.AnnData(X=np.ones((3, 2), dtype=np.float32), obs=obs)
    empty_obs = obs.iloc[:0].copy()
    empty_obs[column] = pd.Series(empty_values, index=empty_obs.index)
    empty = ad.AnnData(X=np.ones((0, 2), dtype=np.float32), obs=empty_obs)
    adatas = [empty, full] if empty_first else [full, empty]
    paths = write_all(adatas, tmp_path, fmt=3)
    try:
        expected = expected_results(paths, dict(join="outer"), tmp_path, 3)
    except Exception as e:  # anndata cannot store its own result
        out = tmp_path / "out.zarr"
        proc = run_anncat("concat", *paths, "-o", out, "--quiet", check=False)
        assert proc.returncode != 0, f"anndata fails ({e}) but anncat wrote {out}"
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert f"obs/{column}" in proc.stderr, proc.stderr
        assert not out.exists()
        return
    out = tmp_path / "out.zarr"
    run_anncat("concat", *paths, "-o", out, "--quiet")
    assert_matches_python(expected, ad.read_zarr(out))


def test_chunks_that_do_not_line_up(tmp_path):
    import make_fixtures
    paths = []
    for i, fmt in enumerate((2, 2)):
        p = tmp_path / f"chunked{i}.zarr"
        make_fixtures.write(make_fixtures.fx_chunked(), p, fmt, False)
        make_fixtures.rechunk(p, fmt)
        paths.append(p)
    # output chunks of ~3 KiB: neither the inputs' 16x7 nor their rows
    compare(paths, tmp_path, dict(join="outer", keys=["a", "b"], index_unique="-"), chunk_mib="0.003")


@pytest.mark.parametrize("opts", [
    dict(join="outer", uns_merge="same", pairwise=True, label="b"),
    dict(join="inner", merge="first", uns_merge="first", index_unique="-"),
    dict(axis="var", join="outer", uns_merge="unique", label="b"),
])
def test_edge_fixture_pairs(tmp_path, opts):
    """Non-ASCII names, index names, nullable strings, raw, nested uns."""
    import make_fixtures
    paths = []
    for i, (fmt, shard) in enumerate(((2, False), (3, True))):
        p = tmp_path / f"edge{i}.zarr"
        make_fixtures.write(make_fixtures.fx_edge(), p, fmt, shard)
        make_fixtures.post_write("edge", p, fmt, shard)
        paths.append(p)
    compare(paths, tmp_path, opts)


def test_readme_example(tmp_path):
    """The README's example command, compared with Python."""
    from conftest import REPO
    paths = [REPO / "examples" / "data" / f"batch{i}.zarr" for i in (1, 2, 3)]
    compare(paths, tmp_path, dict(join="outer", label="batch", keys=["b1", "b2", "b3"],
                                  index_unique="-", uns_merge="same"))


@pytest.mark.parametrize("axis", ["obs", "var"])
@pytest.mark.parametrize("join", ["inner", "outer"])
def test_raw_wider_than_var(input_dir, tmp_path, axis, join):
    check_case(input_dir, tmp_path, "raw_wider", 2, dict(axis=axis, join=join, label="batch", fill_value=None))


@pytest.mark.parametrize("axis", ["obs", "var"])
def test_csc_inputs_converted_in_many_row_parts(tmp_path, axis):
    # Tiny chunks make the out-of-core CSC -> CSR conversion split every
    # input into many row ranges (spill, then gather per part).
    adatas = []
    for i in range(3):
        X = sp.random(200 + 10 * i, 50 + i, density=0.3, format="csc", random_state=i, dtype=np.float32)
        a = ad.AnnData(X=X)
        a.obs_names = [f"c{i}_{j}" for j in range(X.shape[0])]
        a.var_names = [f"g{j}" for j in range(X.shape[1])]
        adatas.append(a)
    paths = write_all(adatas, tmp_path)
    compare(paths, tmp_path, dict(axis=axis, join="outer"), chunk_mib="0.0005")


def test_csc_row_index_past_the_rows_is_refused(tmp_path):
    # A corrupt CSC input (a stored row index past its rows) is an error
    # naming that input's indices, and leaves no output.
    import zarr

    adatas = []
    for i in range(2):
        X = sp.random(40, 10 + i, density=0.3, format="csc", random_state=i, dtype=np.float32)
        a = ad.AnnData(X=X)
        a.obs_names = [f"c{i}_{j}" for j in range(40)]
        a.var_names = [f"g{j}" for j in range(X.shape[1])]
        adatas.append(a)
    paths = write_all(adatas, tmp_path)
    indices = zarr.open(str(paths[1] / "X" / "indices"), mode="r+")
    indices[3] = 45
    out = tmp_path / "out.zarr"
    proc = run_anncat("concat", *paths, "-o", out, "--quiet", check=False)
    assert proc.returncode != 0
    error = proc.stderr.strip()
    assert len(error.splitlines()) == 1, error
    assert "in1.zarr" in error and "X/indices" in error and "45 outside 0..40" in error, error
    assert not out.exists()


@pytest.mark.parametrize("dense", [False, True])
def test_var_axis_with_rows_the_join_reorders(tmp_path, dense):
    # Outer join of obs names sorts them as strings (cell0, cell1, cell10,
    # cell100, ...), so each output row block needs input rows scattered
    # over the whole input: sparse ones are read in runs, dense ones a
    # chunk at a time, not as one span.
    adatas = []
    for i in range(3):
        n = 600 - 50 * i
        X = sp.random(n, 20 + i, density=0.2, format="csr", random_state=10 + i, dtype=np.float32)
        a = ad.AnnData(X=X.toarray() if dense else X)
        a.obs_names = [f"cell{j}" for j in range(n)]
        a.var_names = [f"g{i}_{j}" for j in range(X.shape[1])]
        adatas.append(a)
    paths = write_all(adatas, tmp_path)
    if dense:
        # Chunks of 64 cells: the scattered cells touch every chunk.
        ad.settings.zarr_write_format = 2
        for a, p in zip(adatas, paths):
            a.write_zarr(p, chunks=(64, 8))
    compare(paths, tmp_path, dict(axis="var", join="outer"), chunk_mib="0.0005")


def _frame_columns_input(i, n, rng):
    import pandas as pd
    a = ad.AnnData(X=sp.random(n, 6, density=0.3, format="csr", random_state=i, dtype=np.float32))
    a.obs_names = [f"cell{i}_{j}" for j in range(n)]
    a.var_names = [f"g{j}" for j in range(6)]
    obs = a.obs
    obs["depth"] = rng.integers(0, 1000, size=n).astype(np.int32 if i else np.int64)
    obs["frac"] = rng.random(n).astype(np.float32)
    obs["unique_id"] = [f"u{i}_{j}" for j in range(n)]          # unique strings stay strings
    obs["barcode"] = [f"bc{j}" for j in range(n)]  # unique in each input, repeated across -> categorical
    obs["group"] = rng.choice(["a", "b", "c10", "c9"], size=n)  # repeats -> categorical
    # Categories in an order that is not sorted; the first input's set is
    # the union, so Python keeps its order.
    cats = ["z", "x", "y"] if i == 0 else ["y", "x"]
    obs["cluster"] = pd.Categorical(rng.choice(cats, size=n), categories=cats)
    obs["n_int"] = pd.array(rng.integers(0, 5, size=n), dtype="Int64")
    obs["n_int"][::7] = pd.NA
    obs["flag"] = pd.array(rng.random(n) < 0.5, dtype="boolean")
    obs["flag"][::5] = pd.NA
    if i != 1:
        obs["only_some_int"] = rng.integers(0, 9, size=n)           # int -> float64 + NaN
        obs["only_some_bool"] = rng.random(n) < 0.3                  # bool -> nullable boolean
        obs["only_some_str"] = rng.choice(["p", "q"], size=n)        # strings -> categorical, -1
    return a


@pytest.mark.parametrize("fmt", [2, 3])
def test_obs_written_in_blocks_that_split_inputs(tmp_path, fmt):
    """Blocks of ~65 rows cut through every input (300-500 rows each): the
    obs index and every kind of column must come out as Python's, and the
    obs arrays must be stored in many chunks (written block by block)."""
    import json
    rng = np.random.default_rng(11)
    adatas = [_frame_columns_input(i, 300 + 100 * i, rng) for i in range(3)]
    paths = write_all(adatas, tmp_path, fmt=fmt)
    compare(paths, tmp_path, dict(join="outer", label="batch", keys=["k0", "k1", "k2"], index_unique="-"),
            fmt=fmt, chunk_mib="0.0005")
    out = tmp_path / "out.zarr"
    meta = ".zarray" if fmt == 2 else "zarr.json"
    chunk_rows = json.loads((out / "obs" / "depth" / meta).read_text())
    chunk_rows = chunk_rows["chunks"][0] if fmt == 2 else chunk_rows["chunk_grid"]["configuration"]["chunk_shape"][0]
    assert chunk_rows < 300, chunk_rows
    got = ad.read_zarr(out)
    assert list(got.obs["cluster"].cat.categories) == ["z", "x", "y"]


@pytest.mark.parametrize("join", ["inner", "outer"])
def test_categoricals_of_numbers(tmp_path, join):
    """Integer, float and boolean categories: unified to int64 / float64 /
    bool, ordered by value (or the first input's order when it holds them
    all), ordered ones kept when they agree; also merged on var."""
    import pandas as pd
    rng = np.random.default_rng(5)
    adatas = []
    int_cats = ([10, 2], [3, 1, 100], [2, 10])
    for i in range(3):
        n = 40 + 10 * i
        a = ad.AnnData(X=rng.random((n, 5)).astype(np.float32))
        a.obs_names = [f"c{i}_{j}" for j in range(n)]
        a.var_names = [f"g{j}" for j in range(5)]
        cats = np.array(int_cats[i], dtype=[np.int8, np.int32, np.int64][i])
        a.obs["ints"] = pd.Categorical(rng.choice(cats, size=n), categories=cats)
        a.obs["ordered"] = pd.Categorical(rng.choice([3, 1, 2], size=n), categories=[3, 1, 2], ordered=True)
        if i != 1:
            fl = [2.5, 10.0] if i == 0 else [2.5, 10.0, -1.0]
            a.obs["floats"] = pd.Categorical(rng.choice(fl, size=n), categories=fl)
            a.obs["bools"] = pd.Categorical(rng.random(n) < 0.5, categories=[True, False])
        # int32 categories holding the whole union: still re-sorted (the
        # union is int64, so pandas casts them).
        a.obs["int32_union"] = pd.Categorical(rng.choice([10, 2], size=n), categories=np.array([10, 2], np.int32))
        # All missing, no categories, in the second input.
        a.obs["sometimes_empty"] = (pd.Categorical([np.nan] * n) if i == 1
                                    else pd.Categorical(rng.choice([7, 5], size=n), categories=[7, 5]))
        # Same values and category set in another order: equal under merge.
        a.var["gene_set"] = pd.Categorical([1, 2, 1, 2, 1], categories=[2, 1] if i % 2 else [1, 2])
        adatas.append(a)
    paths = write_all(adatas, tmp_path)
    compare(paths, tmp_path, dict(join=join, merge="same", label="batch"), chunk_mib="0.0005")
    got = ad.read_zarr(tmp_path / "out.zarr")
    assert list(got.obs["int32_union"].cat.categories) == [2, 10]
    assert "gene_set" in got.var


def test_index_named_like_another_inputs_column(tmp_path):
    """Input A's obs index is stored as obs/barcode; input B has a column
    barcode. The column of A's rows is missing, not A's names."""
    rng = np.random.default_rng(6)
    adatas = []
    for i in range(2):
        a = ad.AnnData(X=rng.random((5, 3)).astype(np.float32))
        a.obs_names = [f"c{i}_{k}" for k in range(5)]
        a.var_names = ["g0", "g1", "g2"]
        if i == 0:
            a.obs.index.name = "barcode"
        else:
            a.obs["barcode"] = [f"bc{k}" for k in range(5)]
        adatas.append(a)
    paths = write_all(adatas, tmp_path)
    compare(paths, tmp_path, dict(join="outer"))


def _with_frame_mapping(i, n, axis, rng, has_frame=True):
    import pandas as pd
    a = ad.AnnData(X=rng.random((n, 4)).astype(np.float32) if axis == "obs" else rng.random((4, n)).astype(np.float32))
    names = [f"e{i}_{j}" for j in range(n)]
    other = [f"o{j}" for j in range(4)]
    a.obs_names, a.var_names = (names, other) if axis == "obs" else (other, names)
    mapping = a.obsm if axis == "obs" else a.varm
    mapping["emb"] = rng.random((n, 2))
    if has_frame:
        cols = {
            "zf": rng.random(n),
            "s": rng.choice(["x", "y"], size=n),               # repeats: stays a string array
            "c": pd.Categorical(rng.choice(["p", "q"] if i == 0 else ["r", "p"], size=n)),
        }
        if i == 0:
            cols["i"] = rng.integers(0, 9, size=n)             # int missing elsewhere -> float64
            cols["b"] = rng.random(n) < 0.5                    # bool missing elsewhere -> nullable
            cols["onlyA"] = [f"a{j}" for j in range(n)]        # strings missing elsewhere -> "nan"
        else:
            cols["onlyB"] = pd.array(rng.integers(0, 3, size=n), dtype="Int32")
        mapping["df"] = pd.DataFrame(cols, index=names)
    return a


@pytest.mark.parametrize("axis", ["obs", "var"])
@pytest.mark.parametrize("join", ["inner", "outer"])
def test_data_frames_in_axis_mapping(tmp_path, axis, join):
    """Data frames in obsm (varm along var): columns joined, dtypes unified
    as for obs, indexed by the concatenated names, an input without the
    frame all missing (outer), blocks cutting through inputs."""
    rng = np.random.default_rng(3)
    adatas = [_with_frame_mapping(i, 70 + 20 * i, axis, rng, has_frame=(i != 2 or join == "inner"))
              for i in range(3)]
    if join == "outer":
        assert "df" not in (adatas[2].obsm if axis == "obs" else adatas[2].varm)
    paths = write_all(adatas, tmp_path)
    compare(paths, tmp_path, dict(axis=axis, join=join, index_unique="-"), chunk_mib="0.0005")
    got = ad.read_zarr(tmp_path / "out.zarr")
    frame = (got.obsm if axis == "obs" else got.varm).get("df")
    assert frame is not None and list(frame.index[:2]) == ["e0_0-0", "e0_1-0"]


def test_data_frame_mixed_with_an_array_is_refused(tmp_path):
    rng = np.random.default_rng(4)
    a = _with_frame_mapping(0, 10, "obs", rng)
    b = _with_frame_mapping(1, 10, "obs", rng, has_frame=False)
    b.obsm["df"] = rng.random((10, 3))
    paths = write_all([a, b], tmp_path)
    out = tmp_path / "out.zarr"
    proc = run_anncat("concat", *paths, "-o", out, "--join", "outer", check=False)
    assert proc.returncode != 0
    assert "obsm/df" in proc.stderr and "data frame" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def _merge_inputs(axis, rng):
    """Three inputs whose other-axis names overlap partly; their {other}m /
    {other}p elements are cut from shared matrices over all names (zero
    outside the names every input has), so some keys agree after
    reindexing and some do not."""
    names = [f"g{j}" for j in range(10)]
    common = set(names[3:7])
    shared = rng.random((10, 3)) * np.array([[n in common] for n in names])
    pair = rng.random((10, 10)) * np.outer([n in common for n in names], [n in common for n in names])
    adatas = []
    for i, sel in enumerate((names[0:7], names[3:10], names[2:8])):
        idx = [names.index(n) for n in sel]
        n_cells = 5 + i
        X = rng.random((n_cells, len(sel))).astype(np.float32)
        a = ad.AnnData(X=X if axis == "obs" else X.T.copy())
        cells = [f"c{i}_{k}" for k in range(n_cells)]
        a.obs_names, a.var_names = (cells, sel) if axis == "obs" else (sel, cells)
        m = a.varm if axis == "obs" else a.obsm
        p = a.varp if axis == "obs" else a.obsp
        m["shared_sparse"] = (sp.csr_matrix if i % 2 else sp.csc_matrix)(shared[idx])
        m["shared_dense"] = shared[idx]
        m["ints"] = (shared[idx] * 10).astype(np.int32)
        m["differs"] = sp.csr_matrix(rng.random((len(sel), 2)) * (rng.random((len(sel), 2)) < 0.5))
        if i == 0:
            m["only_first"] = sp.csr_matrix(shared[idx])
        p["pair_sparse"] = (sp.csc_matrix if i == 1 else sp.csr_matrix)(pair[np.ix_(idx, idx)])
        p["pair_dense"] = pair[np.ix_(idx, idx)].astype(np.float32)
        adatas.append(a)
    return adatas


@pytest.mark.parametrize("merge", ["same", "unique", "first", "only"])
@pytest.mark.parametrize("join", ["inner", "outer"])
def test_merge_of_other_axis_mappings_and_pairwise(tmp_path, merge, join):
    """--merge of varm and varp (obsm/obsp along var), dense and sparse,
    CSR and CSC, reindexed on one or both axes, against anndata."""
    rng = np.random.default_rng(8)
    for axis in ("obs", "var"):
        d = tmp_path / axis
        d.mkdir()
        paths = write_all(_merge_inputs(axis, rng), d)
        compare(paths, d, dict(axis=axis, join=join, merge=merge))
        got = ad.read_zarr(d / "out.zarr")
        m = got.varm if axis == "obs" else got.obsm
        p = got.varp if axis == "obs" else got.obsp
        if merge in ("same", "unique"):
            assert "shared_sparse" in m and "pair_sparse" in p and "differs" not in m
        if merge == "first":
            assert {"pair_dense", "pair_sparse", "differs"} <= set(p) | set(m)
            # The first input's CSC element, reindexed, is CSR as scipy makes it.
            import zarr
            group = "varm" if axis == "obs" else "obsm"
            attrs = zarr.open(str(d / "out.zarr"), mode="r")[f"{group}/shared_sparse"].attrs
            assert attrs["encoding-type"] == "csr_matrix"


@pytest.mark.parametrize("merge", ["same", "unique", "first", "only"])
def test_bool_var_columns_gaining_missing_rows(tmp_path, merge):
    """A bool var column (highly_variable) reindexed onto an outer join gains
    NaN: numpy object under anndata 0.12, which it stores as the texts
    True/False/nan; pandas' nullable boolean under anndata 0.13."""
    rng = np.random.default_rng(9)
    names = [f"g{j}" for j in range(8)]
    adatas = []
    for i, sel in enumerate((names[:6], names[2:], names[:6])):
        a = ad.AnnData(X=rng.random((4, len(sel))).astype(np.float32))
        a.obs_names = [f"c{i}_{k}" for k in range(4)]
        a.var_names = sel
        a.var["highly_variable"] = np.array([int(n[1:]) % 3 == 0 for n in sel])
        a.var["same_everywhere"] = np.array([int(n[1:]) % 2 == 0 for n in sel])
        if i == 1:
            a.var["only_second"] = rng.random(len(sel)) < 0.5
        adatas.append(a)
    paths = write_all(adatas, tmp_path)
    compare(paths, tmp_path, dict(join="outer", merge=merge))


@pytest.mark.parametrize("axis", ["obs", "var"])
@pytest.mark.parametrize("join", ["inner", "outer"])
@pytest.mark.parametrize("kind", ["csc", "csr", "mixed"])
def test_sparse_format_csc(tmp_path, axis, join, kind):
    # --sparse-format csc: the same matrix as anndata.concat (which gives
    # CSR), stored as CSC; everything else unchanged. CSC inputs stacked
    # along var are then copied in order instead of transposed.
    adatas = []
    for i in range(3):
        n, m = 40 + 7 * i, 12 + 3 * i
        fmt = kind if kind != "mixed" else ("csc" if i % 2 else "csr")
        X = sp.random(n, m, density=0.3, format=fmt, random_state=30 + i, dtype=np.float32 if i else np.float64)
        a = ad.AnnData(X=X, layers={"counts": X.copy()})
        a.obs_names = [f"cell{j}" for j in range(n)]
        a.var_names = [f"gene{j}" for j in range(m)]
        adatas.append(a)
    paths = write_all(adatas, tmp_path)
    out = tmp_path / "out.zarr"
    opts = dict(axis=axis, join=join, label="batch")
    run_anncat("concat", *paths, "-o", out, "--chunk-mib", "0.0005", "--quiet",
               "--sparse-format", "csc", *cli_args(opts))
    got = ad.read_zarr(out)
    expected = ad.concat([ad.read_zarr(p) for p in paths], **opts)
    assert got.X.format == "csc" and got.layers["counts"].format == "csc"
    for k in ("X", "counts"):
        e = expected.X if k == "X" else expected.layers[k]
        g = got.X if k == "X" else got.layers[k]
        assert e.dtype == g.dtype and e.shape == g.shape
        assert (e.tocsc() != g).nnz == 0
        assert g.has_sorted_indices
    got.X = sp.csr_matrix(got.X)
    got.layers["counts"] = sp.csr_matrix(got.layers["counts"])
    assert_equal(expected, got)


def test_sparse_format_refuses_dense_inputs_and_bad_values(tmp_path):
    a = ad.AnnData(X=np.ones((3, 2), dtype=np.float32))
    a.obs_names = ["a", "b", "c"]
    paths = write_all([a, a.copy()], tmp_path)
    out = tmp_path / "out.zarr"
    proc = run_anncat("concat", *paths, "-o", out, "--sparse-format", "csc", check=False)
    assert proc.returncode != 0 and "dense" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
    proc = run_anncat("concat", *paths, "-o", out, "--sparse-format", "coo", check=False)
    assert proc.returncode != 0 and "--sparse-format" in proc.stderr
    assert not out.exists()


def _sharding(array_dir):
    """The `sharding_indexed` configuration of a v3 array, or None."""
    import json
    doc = json.loads((array_dir / "zarr.json").read_text())
    if doc["node_type"] == "group":  # a nullable-string-array index (anndata 0.13)
        return _sharding(array_dir / "values")
    for codec in doc.get("codecs", []):
        if codec["name"] == "sharding_indexed":
            return doc["chunk_grid"]["configuration"]["chunk_shape"], codec["configuration"]["chunk_shape"]
    return None


def test_v3_output_is_sharded_unless_asked_not_to(tmp_path):
    """A v3 output is sharded by default, as anndata 0.13 writes it; --shard-mib
    sets the shard size, 0 turns sharding off; the values never change."""
    rng = np.random.default_rng(11)
    adatas = []
    for i in range(3):
        a = ad.AnnData(X=sp.random(600, 40, density=0.2, format="csr", dtype=np.float32, random_state=i))
        a.obs_names = [f"c{i}_{k}" for k in range(600)]
        a.var_names = [f"g{k}" for k in range(40)]
        a.layers["dense"] = rng.normal(size=(600, 40))
        adatas.append(a)
    paths = write_all(adatas, tmp_path, fmt=3)
    opts = dict(axis="obs", join="outer")
    shards = {}
    for shard_mib in (None, "0", "0.2"):
        out = tmp_path / f"out-{shard_mib}.zarr"
        extra = [] if shard_mib is None else ["--shard-mib", shard_mib]
        run_anncat("concat", *paths, "-o", out, "--chunk-mib", "0.01", "--quiet", *extra, *cli_args(opts))
        assert_matches_python(expected_results(paths, opts, tmp_path, 3), ad.read_zarr(out))
        arrays = ("X/data", "X/indices", "X/indptr", "layers/dense", "obs/_index")
        found = {a: _sharding(out / a) for a in arrays}
        if shard_mib == "0":
            assert all(s is None for s in found.values()), found
            continue
        assert all(s is not None for s in found.values()), found
        for shard, inner in found.values():
            assert all(s % c == 0 for s, c in zip(shard, inner)), found
        shards[shard_mib] = found
    # The default splits shards into inner chunks; a larger --shard-mib
    # gives larger shards.
    assert any(shard[0] > inner[0] for shard, inner in shards[None].values()), shards[None]
    assert shards["0.2"]["X/data"][0][0] > shards[None]["X/data"][0][0]
    assert shards["0.2"]["layers/dense"][0][0] > shards[None]["layers/dense"][0][0]


LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "legacy"


def compare_legacy_texts(results, got, column):
    """anndata 0.13 reads an old h5ad's string columns as str (0.12, and
    both reading zarr: object), so its concat stores them otherwise; anncat
    writes what 0.12 makes of them. Under 0.13 the column is compared as
    values and then left out of the whole comparison."""
    if int(ad.__version__.split(".")[1]) < 13:
        return

    def texts(values):
        return [None if pd.isna(v) else str(v) for v in values]

    got_texts = texts(got.obs.pop(column))
    for r in results:
        assert texts(r.obs.pop(column)) == got_texts


@pytest.mark.parametrize("opts", [
    dict(join="outer", merge="same", uns_merge="same", label="batch"),
    dict(join="inner", merge="unique", uns_merge="first", index_unique="-", keys=["a", "b"]),
    dict(axis="var", join="outer", merge="first"),
])
@pytest.mark.parametrize("pair", ["07.h5ad", "07.zarr", "07s.h5ad", "07s.zarr"])
def test_anndata_07_stores_as_current_anndata_reads_them(tmp_path, pair, opts):
    """Files written by anndata 0.7.8 (tests/fixtures/legacy: no root
    encoding, categoricals as codes plus `__categories/<column>`, uns scalars
    without encodings) concatenate as anndata.concat of what anndata reads."""
    paths = [LEGACY / f"a{pair}", LEGACY / f"b{pair}"]
    out = tmp_path / "out.zarr"
    run_anncat("concat", *paths, "-o", out, "--quiet", *cli_args(opts))
    got = ad.read_zarr(out)
    results = expected_results(paths, opts, tmp_path, 2)
    if pair.endswith(".h5ad"):
        compare_legacy_texts(results, got, "barcode")
    expected = assert_matches_python(results, got)
    assert list(expected.obs.columns) == list(got.obs.columns)
    assert isinstance(got.obs["cell_type"].dtype, pd.CategoricalDtype) or opts.get("axis") == "var"


PRE07_OPTS = [
    dict(join="outer", merge="same", uns_merge="same", label="batch", pairwise=True),
    dict(join="inner", merge="unique", uns_merge="first", index_unique="-", keys=["a", "b"]),
    dict(axis="var", join="outer", merge="first"),
]


@pytest.mark.parametrize("opts", PRE07_OPTS)
@pytest.mark.parametrize("pair", ["06.h5ad", "06s.h5ad"])
def test_anndata_06_h5ad_as_current_anndata_reads_it(tmp_path, pair, opts):
    """h5ad files written by anndata 0.6.22 (tests/fixtures/legacy: no
    encodings at all, obs and var as record arrays, categories in
    `uns/<column>_categories`, sparse matrices tagged `h5sparse_format`)
    concatenate as anndata.concat of what anndata reads."""
    paths = [LEGACY / f"a{pair}", LEGACY / f"b{pair}"]
    out = tmp_path / "out.zarr"
    run_anncat("concat", *paths, "-o", out, "--quiet", *cli_args(opts))
    got = ad.read_zarr(out)
    results = expected_results(paths, opts, tmp_path, 2)
    columns = list(results[0].obs.columns)
    assert list(got.obs.columns) == columns
    if opts.get("axis") != "var":
        compare_legacy_texts(results, got, "barcode")
    assert_matches_python(results, got)
    assert isinstance(got.obs["cell_type"].dtype, pd.CategoricalDtype) or opts.get("axis") == "var"


@pytest.mark.parametrize("opts", PRE07_OPTS)
def test_anndata_05_archive_as_current_anndata_reads_it(tmp_path, anndata_archive, opts):
    """anndata's own pre-0.7 test file (scanpy's pbmc68k_reduced, written by
    anndata 0.5/0.6: record-array obs, var, obsm and varm with sub-array
    fields, `raw.X` / `raw.var`, record arrays and one-element byte strings
    in uns, adjacency matrices in uns/neighbors) concatenated with itself
    equals anndata.concat of what anndata reads, raw and obsp included."""
    path = anndata_archive("v0.5.0/adata.h5ad")
    opts = dict(opts)
    if opts.get("axis") != "var":
        opts.update(keys=["a", "b"], index_unique="-")
    paths = [path, path]
    out = tmp_path / "out.zarr"
    run_anncat("concat", *paths, "-o", out, "--quiet", *cli_args(opts))
    got = ad.read_zarr(out)
    expected = assert_matches_python(expected_results(paths, opts, tmp_path, 2), got)
    if opts.get("axis") != "var":
        assert isinstance(got.obs["louvain"].dtype, pd.CategoricalDtype)
        assert got.raw is not None and got.raw.shape == expected.raw.shape
    if opts.get("pairwise"):
        assert set(got.obsp) == {"connectivities", "distances"}


@pytest.mark.parametrize("opts", PRE07_OPTS)
def test_anndata_06_zarr_as_anndata_reads_it(tmp_path, opts):
    """zarr stores written by anndata 0.6.22 (structured arrays with
    fixed-width byte strings for obs and var, `json2` object arrays and
    fixed-width byte strings in uns). zarr-python 3, and so the anndata
    the interop venvs hold, cannot open them; anndata 0.12 with zarr 2
    reads them as it reads the h5ad files the same anndata 0.6 wrote from
    the same data, so anncat's output is compared with anndata.concat of
    those."""
    out = tmp_path / "out.zarr"
    run_anncat("concat", LEGACY / "a06.zarr", LEGACY / "b06.zarr", "-o", out, "--quiet", *cli_args(opts))
    got = ad.read_zarr(out)
    # The zarr twins hold layers["counts"] dense (anndata 0.6 could not
    # write it sparse to zarr; see tests/fixtures/legacy/README.md).
    twins = [read_store(LEGACY / f"{w}06.h5ad") for w in "ab"]
    for a in twins:
        a.layers["counts"] = a.layers["counts"].toarray()
    in_memory = ad.concat(twins, **{k: v for k, v in opts.items() if v is not None})
    ad.settings.zarr_write_format = 2
    in_memory.write_zarr(tmp_path / "expected.zarr")
    results = (in_memory, ad.read_zarr(tmp_path / "expected.zarr"))
    assert list(got.obs.columns) == list(results[0].obs.columns)
    if opts.get("axis") != "var":
        compare_legacy_texts(results, got, "barcode")
    assert_matches_python(results, got)
    assert isinstance(got.obs["cell_type"].dtype, pd.CategoricalDtype) or opts.get("axis") == "var"


@pytest.mark.parametrize("axis", ["obs", "var"])
@pytest.mark.parametrize("merge", ["same", "unique", "first", "only"])
def test_data_frames_in_other_axis_mappings_under_merge(tmp_path, axis, merge):
    """A data frame in varm (obsm along var) under every --merge strategy, as
    anndata.concat merges it: reindexed onto the joined axis (new rows
    missing), kept or dropped by pandas' DataFrame.equals."""
    rng = np.random.default_rng(21)
    names = [f"g{j}" for j in range(10)]
    adatas = []
    for i, sel in enumerate((names[:7], names[2:], names[:7])):
        n = 5
        shape = (n, len(sel)) if axis == "obs" else (len(sel), n)
        a = ad.AnnData(X=rng.random(shape).astype(np.float32))
        along, other = (a.obs, a.var) if axis == "obs" else (a.var, a.obs)
        along.index = [f"c{i}_{k}" for k in range(n)]
        other.index = sel
        m = a.varm if axis == "obs" else a.obsm
        length = np.array([float(int(g[1:]) * 10) for g in sel])
        m["df"] = pd.DataFrame({"length": length, "chrom": [f"chr{int(g[1:]) % 3}" for g in sel],
                                "hv": np.array([int(g[1:]) % 2 == 0 for g in sel])}, index=sel)
        m["same_df"] = pd.DataFrame({"length": length}, index=sel)
        if i == 1:
            m["only_df"] = pd.DataFrame({"score": rng.normal(size=len(sel))}, index=sel)
        if i == 2:
            m["df"]["length"] = m["df"]["length"] + 1  # differs from input 0
        adatas.append(a)
    paths = write_all(adatas, tmp_path)
    compare(paths, tmp_path, dict(axis=axis, join="outer", merge=merge))
