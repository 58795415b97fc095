"""Shared set-up of the interop tests: the anncat binary and the fixture stores."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import make_fixtures  # noqa: E402


def anncat_bin() -> Path:
    path = Path(os.environ.get("ANNCAT_BIN", REPO / "target" / "release" / "anncat"))
    if not path.is_file():
        raise RuntimeError(f"anncat binary not found at {path}: build it with cargo build --release")
    return path


def run_anncat(*args, check=True):
    """Runs the anncat binary; returns the CompletedProcess."""
    proc = subprocess.run([str(anncat_bin()), *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"anncat {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory):
    """All fixtures of make_fixtures.py, written once per session."""
    out = tmp_path_factory.mktemp("fixtures")
    for name, make in make_fixtures.FIXTURES.items():
        a = make()
        for suffix, fmt, shard in make_fixtures.VARIANTS:
            path = out / f"{name}_{suffix}.zarr"
            make_fixtures.write(a, path, fmt, shard)
            make_fixtures.post_write(name, path, fmt, shard)
    return out


#: The anndata sdist whose tests/data/archives (files written by old
#: anndata releases) the legacy-layout tests read.
ARCHIVE_SDIST = "anndata-0.13.4"


@pytest.fixture(scope="session")
def anndata_archive(tmp_path_factory):
    """A function giving the path of a file of anndata's own
    tests/data/archives (e.g. "v0.5.0/adata.h5ad"), taken from the anndata
    sdist, downloaded from the package registry into target/anndata-suite
    (where tests/anndata_suite/run.sh keeps it too) unless already there."""
    import tarfile

    cache = REPO / "target" / "anndata-suite"
    sdist = cache / f"{ARCHIVE_SDIST}.tar.gz"
    if not sdist.is_file() or sdist.stat().st_size == 0:
        # Downloaded beside the cache and moved in: parallel test workers
        # never see half a file.
        staging = Path(tmp_path_factory.mktemp("sdist"))
        name, version = ARCHIVE_SDIST.split("-")
        # Only the archives are wanted, not an installable package: the
        # Python 3.11 venv may fetch the sdist of an anndata that needs 3.12.
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "--ignore-requires-python", f"{name}=={version}", "-d", str(staging)],
            check=True,
        )
        cache.mkdir(parents=True, exist_ok=True)
        os.replace(staging / sdist.name, sdist)
    out = Path(tmp_path_factory.mktemp("archives"))

    def extract(member):
        inner = f"{ARCHIVE_SDIST}/tests/data/archives/{member}"
        with tarfile.open(sdist) as tar:
            tar.extract(inner, out, filter="data")
        return out / inner

    return extract
