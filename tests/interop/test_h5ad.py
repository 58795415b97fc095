"""`.h5ad` inputs (HDF5, written by anndata's `write_h5ad`) against Python.

- `anncat convert FILE.h5ad` of every fixture of make_fixtures.py (gen_adata
  and the hand-made edge cases) must read back equal to `read_h5ad`;
- hand-made HDF5 layouts: contiguous dense X, gzip- and lzf-compressed
  sparse, fixed-length string columns and categories, record arrays;
- a sample of 60 cases of the concat matrix with h5ad inputs, or h5ad and
  zarr mixed, compared with `anndata.concat` of the same inputs (default
  local cluster: several worker processes read each h5ad at once);
- a truncated h5ad and a non-HDF5 file named .h5ad give one-line errors
  naming the file, a non-zero exit and no output;
- a dense h5ad several times the memory limit concatenates within it.
"""

import itertools
import json
import random
import shutil
import warnings

import anndata as ad
import h5py
import numpy as np
import pytest
from anndata.tests.helpers import assert_equal

import make_fixtures
from concat_inputs import SETS
from conftest import run_anncat
from test_concat import assert_matches_python, cli_args

warnings.filterwarnings("ignore")


def read_any(path):
    return ad.read_h5ad(path) if path.suffix == ".h5ad" else ad.read_zarr(path)


# --- convert: every encoding as stored in HDF5 --------------------------------


@pytest.mark.parametrize("name", list(make_fixtures.FIXTURES))
def test_convert_h5ad_fixture(tmp_path, name):
    a = make_fixtures.FIXTURES[name]()
    src = tmp_path / f"{name}.h5ad"
    a.write_h5ad(src)
    out = tmp_path / "out.zarr"
    run_anncat("convert", src, "-o", out)
    assert_equal(ad.read_h5ad(src), ad.read_zarr(out))


def rewrite_fixed_length(path, dataset, width):
    """Replaces a variable-length string dataset by fixed-length strings."""
    with h5py.File(path, "r+") as f:
        values = [v.decode() if isinstance(v, bytes) else v for v in f[dataset][...]]
        attrs = dict(f[dataset].attrs)
        del f[dataset]
        d = f.create_dataset(dataset, data=np.array(values, dtype=f"S{width}"))
        for k, v in attrs.items():
            d.attrs[k] = v


@pytest.mark.parametrize("layout", ["contiguous_dense", "gzip_sparse", "lzf_sparse", "fixed_strings"])
def test_hdf5_layouts(tmp_path, layout):
    a = make_fixtures.fx_batch(0)
    src = tmp_path / "in.h5ad"
    if layout == "contiguous_dense":
        a.X = np.asarray(a.X.toarray() if hasattr(a.X, "toarray") else a.X)
        a.write_h5ad(src)
        with h5py.File(src) as f:
            assert f["X"].chunks is None, "X is stored contiguous"
    elif layout in ("gzip_sparse", "lzf_sparse"):
        codec = layout.split("_")[0]
        a.write_h5ad(src, compression=codec)
        with h5py.File(src) as f:
            assert f["X/data"].compression == codec
    else:
        a.write_h5ad(src)
        with h5py.File(src) as f:
            # anndata 0.13 (pandas 3) writes the index as a nullable-string-array group.
            index = "obs/_index/values" if isinstance(f["obs/_index"], h5py.Group) else "obs/_index"
            cats = [k for k in f["obs"] if isinstance(f["obs"][k], h5py.Group) and "categories" in f["obs"][k]]
        rewrite_fixed_length(src, index, 24)
        for c in cats:
            rewrite_fixed_length(src, f"obs/{c}/categories", 16)
        with h5py.File(src) as f:
            assert f[index].dtype.kind == "S"
    out = tmp_path / "out.zarr"
    run_anncat("convert", src, "-o", out)
    assert_equal(ad.read_h5ad(src), ad.read_zarr(out))
    # And as a concat input next to itself.
    cat = tmp_path / "cat.zarr"
    run_anncat("concat", src, src, "-o", cat, "--index-unique", "-", "--chunk-mib", "0.002", "--quiet")
    expected = ad.concat([ad.read_h5ad(src), ad.read_h5ad(src)], index_unique="-")
    expected.write_zarr(tmp_path / "expected.zarr")
    assert_matches_python((expected, ad.read_zarr(tmp_path / "expected.zarr")), ad.read_zarr(cat))


# --- the concat matrix with h5ad inputs ---------------------------------------


@pytest.fixture(scope="session")
def h5_input_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("h5ad_inputs")


_written = {}


def h5_inputs(d, name, axis, mix, compression):
    """The set's inputs as h5ad files (every other one as zarr v2 when `mix`)."""
    key = (name, axis, mix, compression)
    if key not in _written:
        ad.settings.zarr_write_format = 2
        paths = []
        for i, a in enumerate(SETS[name](axis)):
            stem = f"{name}_{axis}_{mix}_{compression}_{i}"
            if mix and i % 2 == 1:
                p = d / f"{stem}.zarr"
                a.write_zarr(p)
            else:
                p = d / f"{stem}.h5ad"
                a.write_h5ad(p, compression=compression)
            paths.append(p)
        _written[key] = paths
    return _written[key]


def h5_matrix():
    space = list(itertools.product(
        list(SETS),
        ["obs", "var"],
        ["inner", "outer"],
        [None, "same", "unique", "first", "only"],
        [None, "same", "first"],
        [(None, None, None), ("batch", None, None), ("batch", ("a", "b", "c"), "-")],
        [None, 0],
        [False, True],
        [False, True],
        [None, "gzip", "lzf"],
    ))
    rng = random.Random(7)
    out = []
    for (name, axis, join, merge, uns_merge, (label, keys, iu), fill, pairwise, mix, comp) in rng.sample(space, 60):
        opts = dict(axis=axis, join=join, merge=merge, uns_merge=uns_merge, label=label,
                    keys=list(keys) if keys else None, index_unique=iu, fill_value=fill, pairwise=pairwise)
        cid = (f"{name}-{axis}-{join}-m{merge}-u{uns_merge}-l{label}-i{iu}-f{fill}-p{int(pairwise)}"
               f"-{'mixed' if mix else 'h5ad'}-{comp}")
        out.append(pytest.param(name, opts, mix, comp, id=cid))
    return out


@pytest.mark.parametrize("name,opts,mix,comp", h5_matrix())
def test_h5ad_concat_matrix(h5_input_dir, tmp_path, name, opts, mix, comp):
    paths = h5_inputs(h5_input_dir, name, opts["axis"], mix, comp)
    if opts.get("keys") is not None:
        opts = dict(opts, keys=opts["keys"][: len(paths)])
    out = tmp_path / "out.zarr"
    run_anncat("concat", *paths, "-o", out, "--chunk-mib", "0.002", "--quiet", *cli_args(opts))
    got = ad.read_zarr(out)
    kwargs = {k: v for k, v in opts.items() if v is not None}
    result = ad.concat([read_any(p) for p in paths], **kwargs)
    ad.settings.zarr_write_format = 2
    result.write_zarr(tmp_path / "expected.zarr")
    expected = assert_matches_python((result, ad.read_zarr(tmp_path / "expected.zarr")), got)
    assert sorted(expected.layers.keys(), key=str) == sorted(got.layers.keys(), key=str)
    assert sorted(expected.uns.keys(), key=str) == sorted(got.uns.keys(), key=str)
    assert (expected.raw is None) == (got.raw is None)


# --- bad h5ad files -----------------------------------------------------------


def test_record_arrays(tmp_path):
    """Compound datasets: numeric and string fields read as anndata writes
    them to zarr; a field type anncat does not read fails naming the element."""
    a = make_fixtures.fx_batch(0)
    a.uns["rec"] = np.rec.fromarrays(
        [np.arange(3), np.array([0.5, 1.5, 2.5], dtype=np.float32), np.array(["x", "yy", "gène"], dtype=object),
         np.array([True, False, True])],
        names=["i", "f", "name", "ok"])
    src = tmp_path / "rec.h5ad"
    a.write_h5ad(src)
    out = tmp_path / "out.zarr"
    run_anncat("convert", src, "-o", out)
    assert_equal(ad.read_h5ad(src), ad.read_zarr(out))
    cat = tmp_path / "cat.zarr"
    run_anncat("concat", src, src, "-o", cat, "--index-unique", "-", "--uns-merge", "same", "--quiet")
    got = ad.read_zarr(cat).uns["rec"]
    assert list(got["name"]) == ["x", "yy", "gène"] and list(got["i"]) == [0, 1, 2]
    # ... and written to .h5ad as compound datasets anndata reads back.
    cat_h5 = tmp_path / "cat.h5ad"
    run_anncat("concat", src, src, "-o", cat_h5, "--index-unique", "-", "--uns-merge", "same", "--quiet")
    got = ad.read_h5ad(cat_h5).uns["rec"]
    assert list(got["name"]) == ["x", "yy", "gène"] and list(got["i"]) == [0, 1, 2]
    assert list(got["f"]) == [0.5, 1.5, 2.5] and list(got["ok"]) == [True, False, True]
    back = tmp_path / "back.h5ad"
    run_anncat("convert", out, "-o", back)
    assert_equal(ad.read_h5ad(src), ad.read_h5ad(back))

    # Fixed-length string fields (older writers) read as text too.
    with h5py.File(src, "r+") as f:
        d = f["uns"].create_dataset("srec", data=np.array([(1, b"ab"), (2, b"cde")], dtype=[("i", "<i8"), ("s", "S5")]))
        d.attrs["encoding-type"] = "rec-array"
        d.attrs["encoding-version"] = "0.2.0"
    fixed = tmp_path / "fixed.zarr"
    run_anncat("convert", src, "-o", fixed)
    srec = ad.read_zarr(fixed).uns["srec"]
    assert [str(v) for v in srec["s"]] == ["ab", "cde"] and list(srec["i"]) == [1, 2]

    b = make_fixtures.fx_batch(1)
    b.uns["nested"] = np.zeros(2, dtype=[("a", "<i8"), ("b", "<f8", (2,))])
    bad = tmp_path / "nested.h5ad"
    b.write_h5ad(bad)
    proc = run_anncat("convert", bad, "-o", tmp_path / "bad.zarr", check=False)
    assert proc.returncode != 0
    assert str(bad) in proc.stderr and "uns/nested" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # Concatenating without uns never reads it.
    run_anncat("concat", bad, bad, "-o", tmp_path / "c2.zarr", "--index-unique", "-", "--quiet")


def test_truncated_and_non_hdf5_files_are_refused(tmp_path):
    good = tmp_path / "good.h5ad"
    make_fixtures.fx_batch(0).write_h5ad(good)
    truncated = tmp_path / "truncated.h5ad"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.h5ad"
    text.write_text("these are not the cells you are looking for\n")
    for bad in (truncated, text):
        for cmd in (["concat", good, bad], ["convert", bad]):
            out = tmp_path / "out.zarr"
            proc = run_anncat(*cmd, "-o", out, check=False)
            assert proc.returncode != 0, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1, proc.stderr
            assert str(bad) in lines[0], lines[0]
            assert "HDF5" in lines[0], lines[0]
            assert not out.exists()
            assert not (tmp_path / "out.zarr.partial" / ".zmetadata").exists()


# --- memory: only the rows a task needs are read ------------------------------


def test_dense_h5ad_larger_than_the_memory_limit(tmp_path):
    rng = np.random.default_rng(5)
    paths = []
    for i in range(2):
        a = ad.AnnData(X=rng.random((3000, 6000), dtype=np.float32))
        a.obs_names = [f"c{i}_{j}" for j in range(a.n_obs)]
        p = tmp_path / f"big{i}.h5ad"
        a.write_h5ad(p)
        paths.append(p)
    limit_mib = 64
    out = tmp_path / "out.zarr"
    report = tmp_path / "report.json"
    run_anncat("concat", *paths, "-o", out, "--memory-limit", f"{limit_mib}MiB", "--workers", "2",
               "--report", report, "--quiet")
    assert all(p.stat().st_size > limit_mib * 2**20 for p in paths), "each input is over the limit"
    r = json.loads(report.read_text())
    # Every task's allocations fit the limit; each worker's RSS stays within
    # it plus the process' fixed overhead the README states (code, libraries,
    # runtime, allocator slack: 32 MiB), far below one input's size.
    assert max(t["peak_alloc"] for t in r["tasks"]) <= limit_mib * 2**20
    peaks = [w["peak_rss"] for w in r["workers"]]
    assert peaks and max(peaks) <= (limit_mib + 32) * 2**20, f"worker peak RSS {max(peaks) / 2**20:.1f} MiB"
    got = ad.read_zarr(out)
    expected = ad.concat([ad.read_h5ad(p) for p in paths])
    np.testing.assert_array_equal(np.asarray(got.X), np.asarray(expected.X))
    assert list(got.obs_names) == list(expected.obs_names)


def test_inspect_shows_hdf5_chunking_and_compression(tmp_path):
    """`anncat inspect` on an .h5ad shows each dataset's HDF5 chunks and
    filters as h5py reports them (contiguous and uncompressed ones too)."""
    import json

    import h5py
    import scipy.sparse as sp

    rng = np.random.default_rng(4)
    a = ad.AnnData(X=sp.random(300, 40, density=0.2, format="csr", random_state=4, dtype=np.float32))
    a.obsm["pca"] = rng.normal(size=(300, 5))
    gz = tmp_path / "gzip.h5ad"
    a.write_h5ad(gz, compression="gzip", compression_opts=6)
    plain = tmp_path / "plain.h5ad"
    a.write_h5ad(plain)
    for path, compressed in ((gz, True), (plain, False)):
        report = json.loads(run_anncat("inspect", "--json", path).stdout)
        rows = {r["path"]: r for r in report["elements"]}
        with h5py.File(path) as f:
            for name in ("X/data", "X/indices", "X/indptr", "obsm/pca"):
                ds = f[name]
                expected_chunks = list(ds.chunks) if ds.chunks else None
                assert rows[name]["chunks"] == expected_chunks, (path.name, name, rows[name])
                if compressed:
                    assert ds.compression == "gzip"
                    assert rows[name]["compression"] == "gzip(6)", (name, rows[name])
                else:
                    assert ds.compression is None
                    assert rows[name]["compression"] is None, (name, rows[name])
    text = run_anncat("inspect", gz).stdout
    assert text.splitlines()[0].endswith("(h5ad: HDF5)"), text
    assert "gzip(6)" in text and "compression" in text.splitlines()[1], text
