"""`anncat concat` against Python's in-memory `anndata.concat`.

Every case writes its inputs with anndata, runs `anncat concat` on them, and
asserts `assert_equal(expected, read_zarr(out))` where `expected` is
`anndata.concat` of the same inputs loaded in memory with the same options,
written with `write_zarr` and read back (the store Python would produce:
writing normalizes in-memory-only representations, e.g. object string
columns with missing values become categoricals).
"""

import itertools
import random
import warnings

import anndata as ad
import numpy as np
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


def expected_store(paths, opts, tmp_path, fmt):
    adatas = [ad.read_zarr(p) for p in paths]
    kwargs = {k: v for k, v in opts.items() if v is not None}
    result = ad.concat(adatas, **kwargs)
    ad.settings.zarr_write_format = fmt
    out = tmp_path / "expected.zarr"
    result.write_zarr(out)
    return ad.read_zarr(out)


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


def check_case(input_dir, tmp_path, name, fmt, opts, chunk_mib="0.002"):
    axis = opts.get("axis", "obs")
    paths = inputs_for(input_dir, name, axis, fmt)
    if opts.get("keys") is not None:
        opts = dict(opts, keys=opts["keys"][: len(paths)])
    out = tmp_path / "out.zarr"
    run_anncat("concat", *paths, "-o", out, "--chunk-mib", chunk_mib, "--quiet", *cli_args(opts))
    expected = expected_store(paths, opts, tmp_path, fmt)
    got = ad.read_zarr(out)
    assert_equal(expected, got)
    for attr in ("obs", "var"):
        assert list(getattr(expected, attr).columns) == list(getattr(got, attr).columns), attr
        assert getattr(expected, attr).index.name == getattr(got, attr).index.name, attr
    assert sorted(expected.layers.keys()) == sorted(got.layers.keys())
    assert sorted(expected.obsm.keys()) == sorted(got.obsm.keys())
    assert sorted(expected.varm.keys()) == sorted(got.varm.keys())
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
        [2, 3],
    ))
    rng = random.Random(20261121)
    cases = rng.sample(space, 240)
    out = []
    for (name, axis, join, merge, uns_merge, (label, keys, iu), fill, fmt) in cases:
        opts = dict(axis=axis, join=join, merge=merge, uns_merge=uns_merge, label=label,
                    keys=list(keys) if keys else None, index_unique=iu, fill_value=fill)
        cid = f"{name}-{axis}-{join}-m{merge}-u{uns_merge}-l{label}-k{bool(keys)}-i{iu}-f{fill}-v{fmt}"
        out.append(pytest.param(name, fmt, opts, id=cid))
    return out


@pytest.mark.parametrize("name,fmt,opts", matrix())
def test_concat_matrix(input_dir, tmp_path, name, fmt, opts):
    check_case(input_dir, tmp_path, name, fmt, opts)


@pytest.mark.parametrize("chunk_mib", ["0.0005", "0.01", "4"])
def test_chunkings_do_not_change_the_result(input_dir, tmp_path, chunk_mib):
    check_case(input_dir, tmp_path, "mixed", 3, dict(axis="obs", join="outer", merge="same"), chunk_mib)
