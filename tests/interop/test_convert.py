"""`anncat convert` and `anncat inspect` against Python anndata / zarr-python.

Every fixture written by anndata is converted v2->v3, v3->v2, rechunked and
sharded; Python's anndata must read the output and find it equal to the
original (`anndata.tests.helpers.assert_equal`), with index names kept, and
zarr-python must see exactly the original's nodes through the output's
consolidated metadata.
"""

import json
import warnings

import anndata as ad
import pytest
import zarr
from anndata.tests.helpers import assert_equal

import make_fixtures
from conftest import run_anncat

SOURCES = [f"{n}_{v}" for n in make_fixtures.FIXTURES for v, _, _ in make_fixtures.VARIANTS]

CONVERSIONS = {
    "to_v2": ["--zarr-format", "2"],
    "to_v3": ["--zarr-format", "3"],
    "rechunked": ["--chunk-mib", "0.001"],
    "to_v3_sharded": ["--zarr-format", "3", "--chunk-mib", "0.0005", "--shard-mib", "0.004"],
}


def read_with_warnings(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = ad.read_zarr(path)
    return a, {type(w.message).__name__ + ": " + str(w.message).split("\n")[0] for w in caught}


def zarr_nodes(path):
    """Every node path zarr-python finds through consolidated metadata."""
    g = zarr.open_group(path, mode="r")
    return sorted(name for name, _ in g.members(max_depth=None))


def assert_same_store(src, out):
    orig, orig_warnings = read_with_warnings(src)
    conv, conv_warnings = read_with_warnings(out)
    assert_equal(orig, conv)
    for attr in ("obs", "var"):
        assert getattr(orig, attr).index.name == getattr(conv, attr).index.name
        assert list(getattr(orig, attr).columns) == list(getattr(conv, attr).columns)
    if orig.raw is not None:
        assert_equal(orig.raw.to_adata(), conv.raw.to_adata())
    new = conv_warnings - orig_warnings
    assert not new, f"reading anncat's output raised warnings the original did not: {new}"
    assert zarr_nodes(out) == zarr_nodes(src)


@pytest.mark.parametrize("conversion", list(CONVERSIONS))
@pytest.mark.parametrize("source", SOURCES)
def test_convert_round_trips(fixture_dir, tmp_path, source, conversion):
    src = fixture_dir / f"{source}.zarr"
    out = tmp_path / "out.zarr"
    run_anncat("convert", src, "-o", out, *CONVERSIONS[conversion])
    assert not (tmp_path / "out.zarr.partial").exists()
    assert_same_store(src, out)
    fmt = json.loads(run_anncat("inspect", "--json", out).stdout)["zarr_format"]
    want = {"to_v2": 2, "to_v3": 3, "to_v3_sharded": 3}.get(conversion, 3 if "_v3" in source else 2)
    assert fmt == want


@pytest.mark.parametrize("source", ["gen_v2", "edge_v3s", "chunked_v2"])
def test_convert_there_and_back(fixture_dir, tmp_path, source):
    src = fixture_dir / f"{source}.zarr"
    there = tmp_path / "there.zarr"
    back = tmp_path / "back.zarr"
    other = "3" if source.endswith("_v2") else "2"
    run_anncat("convert", src, "-o", there, "--zarr-format", other)
    run_anncat("convert", there, "-o", back, "--zarr-format", "2" if other == "3" else "3")
    assert_same_store(src, back)


def test_sharded_output_really_is_sharded(fixture_dir, tmp_path):
    out = tmp_path / "s.zarr"
    run_anncat("convert", fixture_dir / "chunked_v2.zarr", "-o", out, "--zarr-format", "3",
               "--chunk-mib", "0.001", "--shard-mib", "0.01")
    x = zarr.open_array(out / "X", mode="r")
    assert x.shards is not None
    assert x.shards[0] % x.chunks[0] == 0 and x.shards[0] > x.chunks[0]


def test_rechunk_changes_chunks(fixture_dir, tmp_path):
    out = tmp_path / "r.zarr"
    run_anncat("convert", fixture_dir / "chunked_v3.zarr", "-o", out, "--chunk-mib", "0.0005")
    x = zarr.open_array(out / "X", mode="r")
    # 512 bytes of float32 = 128 values: whole rows of 29 columns -> 4 rows.
    assert x.chunks == (4, 29)


@pytest.mark.parametrize("source", SOURCES)
def test_inspect_lists_every_element(fixture_dir, source):
    src = fixture_dir / f"{source}.zarr"
    report = json.loads(run_anncat("inspect", "--json", src).stdout)
    listed = sorted(e["path"] for e in report["elements"] if e["path"] != "/")
    assert listed == zarr_nodes(src)
    g = zarr.open_group(src, mode="r")
    by_path = {e["path"]: e for e in report["elements"]}
    for name, node in g.members(max_depth=None):
        enc = node.attrs.get("encoding-type", "-")
        assert by_path[name]["encoding"] == enc, name
        if isinstance(node, zarr.Array):
            assert tuple(by_path[name]["shape"]) == node.shape, name
    text = run_anncat("inspect", src).stdout
    assert "csr_matrix" in text or "csc_matrix" in text or "array" in text
