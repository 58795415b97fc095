"""What the anncat bench scripts share: the paths, the bench sets, one
measured `anncat concat` under ../shared/bench/measure_cmd.py, and the
line naming the machine in each results file."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = (REPO / ".." / "shared" / "bench").resolve()
ANNCAT = Path(os.environ.get("ANNCAT_BIN", REPO / "target" / "release" / "anncat"))
MEM = "256MiB"

# (set, generator arguments)
SETS = {
    "sparse5000": ["--size", "5000", "--runs", "3", "--kinds", "csr,csc"],
    "dense6000": ["--size", "6000", "--runs", "3", "--kinds", "dense", "--dense-chunks", "auto"],
}


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Runs `cmd` (keyword arguments go to subprocess.run), failing on a non-zero exit."""
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def ensure_sets(data: Path) -> None:
    """Generates the bench sets under `data` on first use."""
    for name, gen in SETS.items():
        d = data / name
        if not (d / "manifest.json").is_file():
            print(f"generating {name} ...", flush=True)
            run([sys.executable, str(BENCH / "gen_data.py"), *gen, "--out", str(d), "--seed", "0"])


def measure(binary: Path, files: list[str], out: Path, args: list[str], env_extra: dict | None = None,
            keep: bool = True) -> dict:
    """One `binary concat FILES -o OUT ARGS` under measure_cmd.py, after a
    `sync` (no run pays for writing back the one before it); its record
    (wall_s, peak_rss_mib, in_bytes, out_bytes, ...)."""
    if out.is_dir():
        shutil.rmtree(out)
    else:
        out.unlink(missing_ok=True)
    json_out = out.with_name(out.name + ".jsonl")
    json_out.unlink(missing_ok=True)
    env = dict(os.environ, **(env_extra or {}))
    os.sync()
    subprocess.run(
        [sys.executable, str(BENCH / "measure_cmd.py"), "--case", out.suffix, "--out", str(out),
         *(["--keep-output"] if keep else []), "--in", *files, "--json-out", str(json_out), "--",
         str(binary), "concat", *files, "-o", str(out), *args],
        check=True, text=True, capture_output=True, env=env)
    lines = [line for line in json_out.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])


def machine() -> str:
    """Date, cores, CPU model and platform, for a results file."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), {platform.platform()}"
