"""anncat from Python: ``concat_on_disk`` named and called like
``anndata.experimental.concat_on_disk``, run by the ``anncat`` binary.

Replacing ``from anndata.experimental import concat_on_disk`` with
``from anncat import concat_on_disk`` is the whole migration. Inputs and
the output may be paths (``.zarr`` or ``.h5ad``), zarr stores or groups
(in memory too: they are copied to a temporary folder and back) or h5py
files. Options of anncat's own (``memory_limit="2GiB"``, ``workers=4``,
``threads=2``, ...) are passed as keyword arguments.

``inspect(path)`` returns what ``anncat inspect --json`` prints, as a dict.

The binary is found in ``ANNCAT_BIN``, then among the scripts of the Python
environment this module is installed in (where ``pip install anncat`` puts
it), then on ``PATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["AnncatError", "binary", "concat_on_disk", "inspect"]


class AnncatError(RuntimeError):
    """``anncat`` failed; the message is its one-line error."""


def binary() -> str:
    """The path of the ``anncat`` binary this module runs."""
    env = os.environ.get("ANNCAT_BIN")
    if env:
        return env
    exe = "anncat" + (sysconfig.get_config_var("EXE") or "")
    # The scripts folder of the install scheme this module sits in (a venv,
    # the system, or ~/.local with `pip install --user`).
    folders = [Path(sysconfig.get_path("scripts", s)) for s in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user"))]
    # `pip install --target DIR` puts the module in DIR and the command in DIR/bin.
    folders.append(Path(__file__).resolve().parent.parent / "bin")
    for folder in folders:
        if (folder / exe).is_file():
            return str(folder / exe)
    found = shutil.which("anncat")
    if found:
        return found
    raise FileNotFoundError("the anncat binary was not found (set ANNCAT_BIN or put anncat on PATH)")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([binary(), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        message = message.removeprefix("anncat: error: ")
        if "not supported" in message:
            raise NotImplementedError(message)
        if message.startswith("invalid option"):
            raise ValueError(message)
        raise AnncatError(message)
    return proc


def _zarr_store_of(obj):
    """The zarr store and group path of a zarr store or group, else None."""
    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is a dependency of anndata
        return None
    if isinstance(obj, zarr.Group):
        return obj.store, obj.path
    from zarr.abc.store import Store

    if isinstance(obj, Store):
        return obj, ""
    return None


def _local_root(store) -> Path | None:
    from zarr.storage import LocalStore

    return Path(store.root) if isinstance(store, LocalStore) else None


def _dump_zarr(store, prefix: str, dest: Path) -> None:
    """Copies every key of `store` under `prefix` into the folder `dest`."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    async def copy():
        start = f"{prefix}/" if prefix else ""
        async for key in store.list_prefix(start):
            buf = await store.get(key, prototype=default_buffer_prototype())
            path = dest / key[len(start):]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buf.to_bytes())

    sync(copy())


def _load_zarr(src: Path, store, prefix: str) -> None:
    """Copies the folder `src` into `store` under `prefix`, replacing it."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    async def copy():
        start = f"{prefix}/" if prefix else ""
        old = [k async for k in store.list_prefix(start)]
        for k in old:
            await store.delete(k)
        for path in sorted(src.rglob("*")):
            if path.is_file():
                key = start + path.relative_to(src).as_posix()
                buf = default_buffer_prototype().buffer.from_bytes(path.read_bytes())
                await store.set(key, buf)

    sync(copy())


def _h5_file_of(obj):
    try:
        import h5py
    except ImportError:  # pragma: no cover
        return None
    return obj if isinstance(obj, h5py.Group) else None


def _input_path(obj, scratch: Path, i: int) -> str:
    """A path anncat can read for one input."""
    if isinstance(obj, (str, os.PathLike)):
        return os.fspath(obj)
    h5 = _h5_file_of(obj)
    if h5 is not None:
        if h5.name != "/":
            raise NotImplementedError(f"input {i}: an HDF5 group other than the file's root ({h5.name})")
        return h5.file.filename
    z = _zarr_store_of(obj)
    if z is not None:
        store, prefix = z
        root = _local_root(store)
        if root is not None:
            return str(root / prefix) if prefix else str(root)
        dest = scratch / f"in{i}.zarr"
        _dump_zarr(store, prefix, dest)
        return str(dest)
    raise TypeError(f"input {i}: expected a path, a zarr store or group, or an h5py file, not {type(obj).__name__}")


def _zarr_settings() -> tuple[int, bool] | None:
    """anndata's settings for zarr output: format and automatic sharding;
    None without anndata (anncat's defaults then: the first input's format).
    Like anndata 0.13, asking for zarr v2 output through the deprecated
    setting warns that it goes away in 0.14."""
    import warnings

    try:
        import anndata as ad
    except ImportError:
        return None

    # anndata 0.13 warns on every read of the setting through its
    # descriptor; its own writers read the stored value, and so does this.
    fmt = ad.settings.__dict__.get("zarr_write_format")
    if fmt is None:
        fmt = ad.settings.zarr_write_format
    elif int(fmt) == 2:
        warnings.warn(
            "zarr v3 will become the only option in 0.14 anndata for `{read,write}_zarr`. "
            "This setting (`anndata.settings.zarr_write_format`) will be removed in 0.14.",
            DeprecationWarning,
            stacklevel=3,
        )
    shard = bool(getattr(ad.settings, "auto_shard_zarr_v3", False))
    return int(fmt), shard


def _flag(name: str, value) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if value is None or value is False:
        return []
    if value is True:
        return [flag]
    if isinstance(value, (list, tuple)):
        return [flag, ",".join(map(str, value))]
    return [flag, str(value)]


def concat_on_disk(
    in_files,
    out_file,
    *,
    max_loaded_elems: int | None = None,
    axis=0,
    join: str = "inner",
    merge=None,
    uns_merge=None,
    label: str | None = None,
    keys=None,
    index_unique: str | None = None,
    fill_value=None,
    pairwise: bool = False,
    **anncat_options,
) -> None:
    """Concatenates AnnData stores on disk, as ``anndata.concat`` would in
    memory. Arguments are those of ``anndata.experimental.concat_on_disk``;
    ``max_loaded_elems`` is accepted and ignored (anncat bounds memory with
    ``memory_limit``). Any other keyword is an anncat option."""
    if isinstance(in_files, Mapping):
        if keys is not None:
            raise TypeError(
                "Cannot specify categories in both mapping keys and using `keys`. Only specify this once."
            )
        keys = [str(k) for k in in_files]
        in_files = list(in_files.values())
    in_files = list(in_files)
    if not in_files:
        raise ValueError("No objects to concatenate.")
    if max_loaded_elems is not None and max_loaded_elems <= 0:
        raise ValueError("max_loaded_elems must be positive")
    axis_name = {0: "obs", 1: "var", "obs": "obs", "var": "var"}.get(axis)
    if axis_name is None:
        raise ValueError(f"axis must be 0, 1, 'obs' or 'var', not {axis!r}")
    if isinstance(out_file, (str, os.PathLike)) and not Path(out_file).parent.exists():
        raise FileNotFoundError(f"Parent directory of {out_file} does not exist.")

    with tempfile.TemporaryDirectory(prefix="anncat-") as tmp:
        scratch = Path(tmp)
        inputs = [_input_path(f, scratch, i) for i, f in enumerate(in_files)]
        out_h5 = _h5_file_of(out_file)
        out_zarr = None if isinstance(out_file, (str, os.PathLike)) or out_h5 is not None else _zarr_store_of(out_file)
        if isinstance(out_file, (str, os.PathLike)):
            target = Path(out_file)
        elif out_h5 is not None:
            target = scratch / "out.h5ad"
        elif out_zarr is not None:
            target = scratch / "out.zarr"
        else:
            raise TypeError(f"out_file: expected a path, a zarr store or group, or an h5py file, not {type(out_file).__name__}")
        args = ["concat", *inputs, "-o", str(target), "--overwrite", "--quiet", "--axis", axis_name, "--join", join]
        settings = _zarr_settings() if target.suffix.lower() == ".zarr" else None
        if settings is not None:
            fmt, shard = settings
            args += ["--zarr-format", str(fmt)]
            if fmt == 3 and not shard:
                args += ["--shard-mib", "0"]
        args += _flag("merge", merge) + _flag("uns_merge", uns_merge) + _flag("label", label)
        if keys is not None:
            keys = [str(k) for k in keys]
            if any("," in k for k in keys):
                # --keys is comma-separated; KEY=PATH inputs carry any key.
                pos = args.index("-o")
                args[1:pos] = [f"{k}={p}" for k, p in zip(keys, inputs, strict=True)]
            else:
                args += ["--keys", ",".join(keys)]
        args += _flag("index_unique", index_unique) + _flag("pairwise", pairwise)
        if fill_value is not None:
            args += ["--fill-value", repr(fill_value) if isinstance(fill_value, float) else str(fill_value)]
        for name, value in anncat_options.items():
            args += _flag(name, value)
        _run(args)
        if out_h5 is not None:
            import h5py

            with h5py.File(target, "r") as src:
                for k, v in src.attrs.items():
                    out_h5.attrs[k] = v
                for k in src:
                    src.copy(src[k], out_h5, name=k)
        elif out_zarr is not None:
            _load_zarr(target, out_zarr[0], out_zarr[1])


def inspect(path) -> dict:
    """What ``anncat inspect --json PATH`` prints, as a dict: the store's
    format, shape and every element with its encoding, dtype, chunking and
    compression."""
    return json.loads(_run(["inspect", "--json", os.fspath(path)]).stdout)
