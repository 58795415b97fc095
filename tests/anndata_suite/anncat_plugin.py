"""pytest plugin: anndata's own on-disk concat suite with anncat standing in
for ``concat_on_disk``.

Every name the suite calls ``concat_on_disk`` by (the test module's import,
``anndata.experimental`` and ``anndata.experimental.merge``) is replaced by
``anncat.concat_on_disk`` for each test. The ``max_loaded_elems=5`` repeats
(a knob of Python's implementation that anncat ignores) are left out for
time. The session fails if anncat was never called, so a suite that stopped
reaching it cannot pass unnoticed: every call appends a line to the file
``ANNCAT_SUITE_CALLS`` names (run.sh sets it), which the session (the
pytest-xdist controller, whose workers make the calls) counts at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import anncat

CALLS = Path(os.environ["ANNCAT_SUITE_CALLS"])


def _counted(*args, **kwargs):
    with CALLS.open("a") as log:
        log.write("call\n")
    return anncat.concat_on_disk(*args, **kwargs)


@pytest.fixture(autouse=True)
def _anncat_in_place_of_concat_on_disk(request, monkeypatch):
    import anndata.experimental
    import anndata.experimental.merge

    if hasattr(request.module, "concat_on_disk"):
        monkeypatch.setattr(request.module, "concat_on_disk", _counted)
    monkeypatch.setattr(anndata.experimental, "concat_on_disk", _counted)
    monkeypatch.setattr(anndata.experimental.merge, "concat_on_disk", _counted)


def pytest_collection_modifyitems(config, items):
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        (dropped if params.get("max_loaded_elems") == 5 else kept).append(item)
    items[:] = kept
    config.hook.pytest_deselected(items=dropped)


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller counts for all of them
    calls = len(CALLS.read_text().splitlines()) if CALLS.is_file() else 0
    print(f"\nanncat ran in place of concat_on_disk {calls} times")
    if calls == 0 and session.testscollected:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
