"""The wheel as installed in a fresh venv (tests/python_pkg/run.sh makes it):
the `anncat` command and module come from the install, not the checkout;
`anncat.concat_on_disk` gives what `anndata.concat` gives for the same
inputs; errors arrive as Python exceptions naming the file.

Runs without ANNCAT_BIN and without the checkout's python/ on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata.tests.helpers import assert_equal

import anncat


def _adata(seed: int, n_obs: int, genes: list[str], name: str) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    x = sp.random(n_obs, len(genes), density=0.3, format="csr", dtype=np.float32, random_state=rng)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["T", "B", "NK"], n_obs)),
            "n_counts": rng.integers(0, 1000, n_obs),
        },
        index=[f"{name}-cell{i}" for i in range(n_obs)],
    )
    var = pd.DataFrame({"gene_ids": [f"ENSG{g}" for g in genes]}, index=genes)
    a = ad.AnnData(X=x, obs=obs, var=var)
    a.layers["counts"] = x.copy()
    a.obsm["X_pca"] = rng.normal(size=(n_obs, 3)).astype(np.float32)
    a.uns["schema"] = "v1"
    return a


def _assert_matches_anndata(expected: ad.AnnData, got: ad.AnnData, tmp_path: Path) -> None:
    """`got` equals `anndata.concat`'s result in memory, or as anndata
    stores it (writing turns string columns with repeats into categoricals)."""
    try:
        assert_equal(got, expected)
    except AssertionError:
        expected.write_zarr(tmp_path / "expected.zarr")
        assert_equal(got, ad.read_zarr(tmp_path / "expected.zarr"))


@pytest.fixture
def inputs(tmp_path):
    """Three stores with overlapping genes: zarr, zarr and gzip-compressed
    h5ad (its chunks are inflated by anncat itself, through HDF5 2's
    H5Dread_chunk in this static build)."""
    genes = [f"g{i}" for i in range(40)]
    adatas = {
        "a": _adata(1, 300, genes[:30], "a"),
        "b": _adata(2, 200, genes[10:], "b"),
        "c": _adata(3, 250, genes[5:35], "c"),
    }
    paths = {}
    for key, a in adatas.items():
        if key == "c":
            paths[key] = tmp_path / f"{key}.h5ad"
            a.write_h5ad(paths[key], compression="gzip")
        else:
            paths[key] = tmp_path / f"{key}.zarr"
            a.write_zarr(paths[key])
    return adatas, paths


def test_command_and_module_come_from_the_install():
    assert "ANNCAT_BIN" not in os.environ
    module = Path(anncat.__file__).resolve()
    assert module.is_relative_to(Path(sysconfig.get_path("purelib")).resolve()), module
    binary = Path(anncat.binary())
    assert binary.parent == Path(sysconfig.get_path("scripts")), binary
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("anncat 0.1.0"), version
    linked = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    assert "hdf5" not in linked, f"the wheel's binary links a shared HDF5:\n{linked}"
    ran = subprocess.run([sys.executable, "-m", "anncat", "--version"], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout == version


@pytest.mark.parametrize("join", ["inner", "outer"])
@pytest.mark.parametrize("suffix", [".zarr", ".h5ad"])
def test_concat_on_disk_equals_anndata_concat(inputs, tmp_path, join, suffix):
    adatas, paths = inputs
    out = tmp_path / f"out{suffix}"
    anncat.concat_on_disk(
        paths, out, join=join, label="batch", index_unique="-", merge="same", uns_merge="same",
        workers=2, memory_limit="256MiB",
    )
    expected = ad.concat(adatas, join=join, label="batch", index_unique="-", merge="same", uns_merge="same")
    got = ad.read_zarr(out) if suffix == ".zarr" else ad.read_h5ad(out)
    _assert_matches_anndata(expected, got, tmp_path)


def test_concat_on_disk_along_var_with_keys(inputs, tmp_path):
    adatas, paths = inputs
    # Along var: the inputs need the same cells, so each is its own first 100.
    same_cells = {}
    for key, a in adatas.items():
        sub = a[:100].copy()
        sub.obs_names = [f"cell{i}" for i in range(100)]
        sub.var_names = [f"{key}-{g}" for g in sub.var_names]
        same_cells[key] = sub
        sub.write_zarr(tmp_path / f"v{key}.zarr")
    out = tmp_path / "var.zarr"
    anncat.concat_on_disk(
        [tmp_path / f"v{k}.zarr" for k in same_cells], out, axis=1, keys=list(same_cells), label="src",
        join="outer", fill_value=0,
    )
    expected = ad.concat(list(same_cells.values()), axis=1, keys=list(same_cells), label="src",
                         join="outer", fill_value=0)
    _assert_matches_anndata(expected, ad.read_zarr(out), tmp_path)


def test_inspect_tells_the_container(inputs):
    _, paths = inputs
    zarr_info = anncat.inspect(paths["a"])
    h5_info = anncat.inspect(paths["c"])
    assert zarr_info["container"] == "zarr"
    assert h5_info["container"] == "hdf5"
    x = next(e for e in zarr_info["elements"] if e["path"] == "X")
    assert x["encoding"] == "csr_matrix"


def test_errors_name_the_file(inputs, tmp_path):
    _, paths = inputs
    missing = tmp_path / "missing.zarr"
    with pytest.raises(anncat.AnncatError, match="missing.zarr"):
        anncat.concat_on_disk([paths["a"], missing], tmp_path / "never.zarr")
    assert not (tmp_path / "never.zarr").exists()
    with pytest.raises(ValueError, match="axis"):
        anncat.concat_on_disk([paths["a"], paths["b"]], tmp_path / "never.zarr", axis=2)
