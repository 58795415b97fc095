"""Input sets for the concat tests, written with Python anndata.

Each set is a list of AnnData objects whose names on the other axis overlap
partly and appear in different orders, with differing dtypes, layers, obsm
and uns keys, categoricals with different categories, and columns missing
from some inputs. `axis` says which axis the set is meant to be
concatenated along (names on that axis are unique per input).
"""

import numpy as np
import pandas as pd
import scipy.sparse as sp
import anndata as ad

POOL = [f"g{i}" for i in range(12)]


def _matrix(rng, kind, shape, dtype):
    dense = rng.integers(0, 4, size=shape).astype(dtype)
    dense[rng.random(shape) < 0.5] = 0
    if kind == "dense":
        return dense
    if kind == "csr":
        return sp.csr_matrix(dense)
    return sp.csc_matrix(dense)


def make_set(seed, kinds, dtypes, axis="obs", *, rich=True, raw=False, n_rows=(4, 9)):
    """One input per entry of `kinds` (dense / csr / csc) and `dtypes`."""
    rng = np.random.default_rng(seed)
    adatas = []
    for i, (kind, dtype) in enumerate(zip(kinds, dtypes)):
        n_axis = int(rng.integers(*n_rows))
        n_other = int(rng.integers(6, 10))
        other = list(rng.choice(POOL, size=n_other, replace=False))
        axis_names = [f"c{i}_{k}" for k in range(n_axis)]
        n_obs, n_var = (n_axis, n_other) if axis == "obs" else (n_other, n_axis)
        obs_names, var_names = (axis_names, other) if axis == "obs" else (other, axis_names)
        X = _matrix(rng, kind, (n_obs, n_var), dtype)
        a = ad.AnnData(X=X)
        a.obs_names = obs_names
        a.var_names = var_names
        if rich:
            along = a.obs if axis == "obs" else a.var
            n = n_axis
            cats = ["a", "b", "c", "d10", "d2"][: 2 + i % 3]
            along["cat"] = pd.Categorical(rng.choice(cats, size=n), categories=cats)
            along["stage"] = pd.Categorical(rng.choice(["early", "late"], size=n),
                                            categories=["early", "late"], ordered=True)
            along["score"] = rng.normal(size=n)
            if i % 2 == 0:
                along["count"] = rng.integers(0, 100, size=n).astype(np.int32)
                along["flag"] = rng.random(n) < 0.5
            along["uid"] = [f"u{i}_{k}" for k in range(n)]
            # other axis: a column equal for shared names, one that differs,
            # and one only the first input has.
            across = a.var if axis == "obs" else a.obs
            across["gene_len"] = [float(int(g[1:]) * 10) for g in other]
            across["batch_mean"] = rng.normal(size=len(other))
            if i == 0:
                across["only_first"] = np.arange(len(other), dtype=np.int64)
            a.layers["counts"] = _matrix(rng, kind, (n_obs, n_var), np.int32)
            if i % 2 == 1:
                a.layers["extra"] = _matrix(rng, "dense", (n_obs, n_var), np.float32)
            m = a.obsm if axis == "obs" else a.varm
            m["X_pca"] = rng.normal(size=(n, 3 + i % 3)).astype(np.float32)
            if i == 0:
                m["only0"] = rng.normal(size=(n, 2))
            p = a.obsp if axis == "obs" else a.varp
            p["dist"] = sp.random(n, n, density=0.3, format="csr", dtype=np.float32, random_state=seed + i)
            if i == 1:
                p["dense_only1"] = rng.normal(size=(n, n))
            alt_m = a.varm if axis == "obs" else a.obsm
            alt_m["loadings"] = np.array([[float(int(g[1:]))] * 2 for g in other])
            a.uns = {
                "shared": {"a": 1, "arr": np.arange(3)},
                "differs": i,
                f"only{i}": "x",
                "nested": {"same": "s", "diff": np.full(2, i)},
            }
        if raw:
            a.raw = a.copy()
        adatas.append(a)
    return adatas


SETS = {
    "csr_same_var": lambda axis: [
        ad.AnnData(X=sp.random(5 + i, 8, density=0.4, format="csr", dtype=np.float32, random_state=i),
                   obs=pd.DataFrame(index=[f"c{i}_{k}" for k in range(5 + i)]),
                   var=pd.DataFrame(index=POOL[:8]))
        if axis == "obs" else
        ad.AnnData(X=sp.random(8, 5 + i, density=0.4, format="csr", dtype=np.float32, random_state=i),
                   obs=pd.DataFrame(index=POOL[:8]),
                   var=pd.DataFrame(index=[f"c{i}_{k}" for k in range(5 + i)]))
        for i in range(3)
    ],
    "csr_mixed_dtypes": lambda axis: make_set(1, ["csr"] * 3, [np.float32, np.float64, np.int32], axis),
    "csc": lambda axis: make_set(2, ["csc"] * 3, [np.float32] * 3, axis),
    "dense": lambda axis: make_set(3, ["dense"] * 3, [np.float32, np.int32, np.float32], axis),
    "dense_int": lambda axis: make_set(4, ["dense"] * 2, [np.int32, np.int64], axis),
    "mixed": lambda axis: make_set(5, ["dense", "csr", "csc"], [np.float32, np.float32, np.float64], axis),
    "raw": lambda axis: make_set(6, ["csr", "csr"], [np.float32, np.float32], axis, raw=True),
    "raw_wider": lambda axis: _raw_wider(axis),
}


def _raw_wider(axis):
    """raw keeps every gene, the main object a subset: raw's var differs in
    length from var, so stacking along var must use raw's own widths."""
    out = []
    for a in make_set(8, ["csr", "dense", "csc"], [np.float32, np.float32, np.float64], axis, rich=False):
        a.raw = a.copy()
        keep = [i for i in range(a.n_vars) if i % 3 != 0]
        out.append(a[:, keep].copy())
    return out
