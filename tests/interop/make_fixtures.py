#!/usr/bin/env python3
"""Writes AnnData fixture stores with Python anndata, for anncat's tests.

Usage: make_fixtures.py OUTDIR [--small]

Every fixture is written three ways: zarr v2 (NAME_v2.zarr), zarr v3
(NAME_v3.zarr) and sharded zarr v3 (NAME_v3s.zarr). `--small` writes only the
few small fixtures committed under tests/fixtures/ (so `cargo test` alone
exercises real anndata-written stores).
"""

import argparse
import shutil
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr
from anndata.tests.helpers import gen_adata

warnings.filterwarnings("ignore")


def rng(seed):
    return np.random.default_rng(seed)


def fx_gen():
    """gen_adata: every encoding anndata's own tests use (CSR X)."""
    return gen_adata((20, 12), random_state=rng(1))


def fx_gen_csc():
    """gen_adata with a CSC X and CSC sparse members."""
    return gen_adata((15, 10), sp.csc_matrix, sparse_fmt="csc", random_state=rng(2))


def fx_gen_dense():
    """gen_adata with a dense int X."""
    try:
        return gen_adata((11, 7), np.array, X_dtype=np.int32, random_state=rng(3))
    except TypeError:  # anndata 0.13's gen_adata has no X_dtype
        a = gen_adata((11, 7), np.array, random_state=rng(3))
        a.X = np.asarray(a.X).astype(np.int32)
        return a


def fx_edge():
    """Hand-made edge cases: non-ASCII names, nullable strings, scalars, None, raw."""
    r = rng(4)
    obs_names = ["zelle_α", "cellule-é", "细胞", "cell 4", "c5", "c6"]
    var_names = ["gène", "Gen_ß", "g3", "g4"]
    obs = pd.DataFrame(
        {
            "größe": r.normal(size=6),
            "label": pd.Categorical(["a", "b", "a", "ç", "b", "a"]),
            "stage": pd.Categorical(["early", "late", "mid", "early", "late", "mid"],
                                    categories=["early", "mid", "late"], ordered=True),
            "note": pd.array(["x", None, "z", "ü", None, "w"], dtype="string"),
            "flag": pd.array([True, None, False, True, False, None], dtype="boolean"),
            "count": pd.array([1, 2, None, 4, 5, 6], dtype="Int64"),
            "plain_str": np.array(["p", "q", "r", "s", "t", "u"], dtype=object),
        },
        index=pd.Index(obs_names, name="cell_id"),
    )
    var = pd.DataFrame({"mean": r.normal(size=4)}, index=pd.Index(var_names, name="gene"))
    X = sp.random(6, 4, density=0.5, format="csr", dtype=np.float64, random_state=5)
    a = ad.AnnData(X=X, obs=obs, var=var)
    a.layers["counts"] = r.integers(0, 10, size=(6, 4)).astype(np.int32)
    a.obsm["X_pca"] = r.normal(size=(6, 3)).astype(np.float32)
    a.obsp["distances"] = sp.random(6, 6, density=0.3, format="csr", random_state=6)
    a.uns = {
        "title": "einzelzell-übersicht",
        "n": 42,
        "pi": 3.5,
        "flag": True,
        "nothing": None,
        "names": np.array(["α", "β", "γ"], dtype=object),
        "nested": {"deeper": {"v": np.arange(5, dtype=np.int16)}, "empty": {}},
    }
    a.raw = a.copy()
    return a


def fx_empty_rows():
    """0 cells: every matrix has 0 rows, obs has typed columns but no rows."""
    obs = pd.DataFrame({"x": np.array([], dtype=np.float64),
                        "c": pd.Categorical([], categories=["a", "b"])},
                       index=pd.Index([], dtype=object))
    var = pd.DataFrame(index=[f"g{i}" for i in range(5)])
    a = ad.AnnData(X=sp.csr_matrix((0, 5), dtype=np.float32), obs=obs, var=var)
    a.layers["dense"] = np.zeros((0, 5), dtype=np.float64)
    return a


def fx_zero_cols():
    """0 genes, and data frames with no columns at all."""
    obs = pd.DataFrame(index=[f"c{i}" for i in range(6)])
    var = pd.DataFrame(index=pd.Index([], dtype=object))
    a = ad.AnnData(X=sp.csr_matrix((6, 0), dtype=np.float32), obs=obs, var=var)
    a.obsm["empty"] = np.zeros((6, 0))
    return a


def fx_int64_indptr():
    """A CSR X whose indptr and indices are int64."""
    X = sp.random(30, 8, density=0.3, format="csr", dtype=np.float32, random_state=7)
    X.indptr = X.indptr.astype(np.int64)
    X.indices = X.indices.astype(np.int64)
    a = ad.AnnData(X=X)
    a.obs_names = [f"cell{i}" for i in range(30)]
    a.var_names = [f"gene{i}" for i in range(8)]
    return a


def fx_chunked():
    """Dense and sparse data written with small, odd chunks (many chunks per array)."""
    r = rng(8)
    a = ad.AnnData(
        X=r.normal(size=(103, 29)).astype(np.float32),
        obs=pd.DataFrame({"v": r.integers(0, 5, 103)}, index=[f"cell{i}" for i in range(103)]),
        var=pd.DataFrame(index=[f"gene{i}" for i in range(29)]),
    )
    a.layers["sparse"] = sp.random(103, 29, density=0.2, format="csr", dtype=np.float64, random_state=9)
    return a


def add_nullable_strings(path, fmt):
    """anndata turns string columns with repeats or NA into categoricals on
    write; write one nullable-string-array column into obs explicitly."""
    g = zarr.open_group(path, mode="r+", zarr_format=fmt, use_consolidated=False)
    with ad.settings.override(allow_write_nullable_strings=True):
        ad.io.write_elem(g["obs"], "nullable_note",
                         pd.array(["x", None, "z", "ü", None, "w"], dtype="string"))
    order = list(g["obs"].attrs["column-order"]) + ["nullable_note"]
    g["obs"].attrs["column-order"] = order
    zarr.consolidate_metadata(path)


def rechunk(path, fmt):
    """Rewrites X and layers/sparse of a chunked fixture with small chunks."""
    g = zarr.open_group(path, mode="r+", zarr_format=fmt, use_consolidated=False)
    X = g["X"][...]
    del g["X"]
    ad.io.write_elem(g, "X", X, dataset_kwargs={"chunks": (16, 7)})
    sparse = ad.io.read_elem(g["layers/sparse"])
    del g["layers/sparse"]
    ad.io.write_elem(g["layers"], "sparse", sparse, dataset_kwargs={"chunks": (37,)})
    zarr.consolidate_metadata(path)


def fx_batch(i):
    """A small single-cell batch for the README example: CSR counts over a
    partly shared gene panel, typed obs columns, a layer, a PCA and uns."""
    r = rng(100 + i)
    n_cells = 40 + 10 * i
    genes = sorted(r.choice(40, size=30, replace=False))
    X = sp.random(n_cells, len(genes), density=0.2, format="csr", dtype=np.float32, random_state=100 + i)
    X.data[:] = r.integers(1, 20, X.nnz)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(r.choice(["B", "T", "NK", "Mono"], n_cells)),
            "n_counts": np.asarray(X.sum(axis=1)).ravel(),
            "doublet": r.random(n_cells) < 0.05,
        },
        index=[f"b{i}_cell{k}" for k in range(n_cells)],
    )
    var = pd.DataFrame({"chrom": pd.Categorical([f"chr{1 + g % 5}" for g in genes])},
                       index=[f"gene{g}" for g in genes])
    a = ad.AnnData(X=X, obs=obs, var=var)
    a.layers["counts"] = X.copy()
    a.obsm["X_pca"] = r.normal(size=(n_cells, 5)).astype(np.float32)
    a.uns = {"protocol": "10x v3", "batch_id": i}
    return a


FIXTURES = {
    "gen": fx_gen,
    "gen_csc": fx_gen_csc,
    "gen_dense": fx_gen_dense,
    "edge": fx_edge,
    "empty_rows": fx_empty_rows,
    "zero_cols": fx_zero_cols,
    "int64_indptr": fx_int64_indptr,
    "chunked": fx_chunked,
}
SMALL = ["edge", "chunked"]
VARIANTS = (("v2", 2, False), ("v3", 3, False), ("v3s", 3, True))


def write(a, path, fmt, shard):
    if path.exists():
        shutil.rmtree(path)
    ad.settings.zarr_write_format = fmt
    with ad.settings.override(auto_shard_zarr_v3=shard, allow_write_nullable_strings=True):
        a.write_zarr(path)


def post_write(name, path, fmt, shard):
    """Edits a written fixture where anndata's writer cannot produce the case."""
    if name == "chunked" and not shard:
        rechunk(path, fmt)
    if name == "edge":
        add_nullable_strings(path, fmt)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    p.add_argument("--small", action="store_true")
    p.add_argument("--examples", action="store_true", help="write the README's example batches instead")
    args = p.parse_args()
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    if args.examples:
        for i, fmt in ((1, 2), (2, 2), (3, 3)):
            path = out / f"batch{i}.zarr"
            write(fx_batch(i), path, fmt, False)
            print(path)
        return 0
    names = SMALL if args.small else list(FIXTURES)
    for name in names:
        a = FIXTURES[name]()
        for suffix, fmt, shard in VARIANTS:
            path = out / f"{name}_{suffix}.zarr"
            write(a, path, fmt, shard)
            post_write(name, path, fmt, shard)
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
