"""Atomic artifact I/O shared by every stage.

Every file a stage writes goes through :func:`atomic_path`: the data is written to a
temporary file in the destination folder and renamed over the target only once it is
complete, so a killed job never leaves a half-written artifact (a rename within one
file system is atomic on POSIX). Readers validate schemas with :func:`read_parquet`.

The schemas of all artifacts are documented in ``docs/artifacts.md``; the column
contracts used by the code live in :mod:`langtail.schemas`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text(path: PathLike, text: str) -> None:
    """Write a text file atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: PathLike, obj: Any) -> None:
    """Write JSON atomically, sorted keys, 2-space indent."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_parquet(
    path: PathLike,
    df: pd.DataFrame,
    metadata: Mapping[str, Any] | None = None,
    schema: pa.Schema | None = None,
) -> None:
    """Write ``df`` as Parquet atomically.

    ``metadata`` (JSON-serialisable) is stored under the key ``langtail`` in the file's
    key-value metadata; read it back with :func:`read_parquet_metadata`. If ``schema``
    is given the frame is cast to it (so dtypes are exactly the documented ones).
    The output is deterministic for identical inputs (no pandas index, no timestamps).
    """
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta.pop(b"pandas", None)
    if metadata is not None:
        meta[b"langtail"] = json.dumps(metadata, sort_keys=True, default=_json_default).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path, ".parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: PathLike, required: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read a Parquet artifact; check that ``required`` columns exist with those dtypes.

    ``required`` maps column name -> pandas dtype string (``"int32"``, ``"object"``,
    ``"bool"``, ``"float32"``, ``"string"``...). A mismatch raises ``ValueError`` naming
    the file, the column and the fix (rerun the stage that writes it).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: artifact not found (run the stage that writes it first)")
    df = pq.read_table(path).to_pandas()
    if required:
        check_columns(df, required, where=str(path))
    return df


def check_columns(df: pd.DataFrame, required: Mapping[str, str], where: str) -> None:
    """Raise ``ValueError`` if ``df`` lacks a column or has a different dtype."""
    for col, dtype in required.items():
        if col not in df.columns:
            raise ValueError(f"{where}: missing column {col!r} (have {list(df.columns)}); "
                             "the file was written by an older or different stage: rerun it")
        have = str(df[col].dtype)
        if dtype == "string":
            ok = have in ("object", "string", "str") or have.startswith("string")
        else:
            ok = have == dtype
        if not ok:
            raise ValueError(f"{where}: column {col!r} has dtype {have}, expected {dtype}")


def read_parquet_metadata(path: PathLike) -> dict[str, Any]:
    """Return the ``langtail`` metadata dict stored by :func:`write_parquet` (or {})."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"langtail")
    return json.loads(raw) if raw else {}


# ----------------------------------------------------------------------------- checkpoints
#
# One checkpoint format (docs/artifacts.md, "Checkpoints"): a ``torch.save`` file whose
# payload holds only tensors and plain Python values, read back with
# ``torch.load(weights_only=True)``, which cannot run code. A file that needs the full
# pickle loader (an old or foreign checkpoint) is refused unless the user opts in.

TRUST_ENV = "LANGTAIL_TRUST_CHECKPOINTS"
TRUST_FLAG = "--trust-checkpoint"
_TRUE = ("1", "true", "yes", "on")
_PLAIN = (str, int, float, bool, bytes, type(None))


class UnsafeCheckpointError(ValueError):
    """A checkpoint needs the unsafe (code-running) pickle loader and was not trusted."""


def trust_checkpoints() -> bool:
    """Whether the user opted in to the unsafe loader (``LANGTAIL_TRUST_CHECKPOINTS=1``,
    which ``langtail --trust-checkpoint`` sets for its process and the jobs it starts)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in _TRUE


def set_trust_checkpoints(on: bool) -> None:
    """Opt in (or out) of the unsafe loader for this process and its children."""
    if on:
        os.environ[TRUST_ENV] = "1"
    else:
        os.environ.pop(TRUST_ENV, None)


def checkpoint_payload(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` in the form the safe loader accepts; raise ``TypeError`` naming the key otherwise.

    Allowed: tensors, ``str``/``int``/``float``/``bool``/``bytes``/``None``, ``torch.dtype``,
    ``torch.device``, ``torch.Size`` and ``dict``/``list``/``tuple`` of those. Lossless
    conversions: numpy scalars -> Python scalars, :class:`~pathlib.Path` -> ``str``.
    Anything else (numpy arrays, dataclasses, arbitrary objects) is an error: convert it
    in the caller (e.g. ``torch.from_numpy``, ``dataclasses.asdict``).
    """
    import numpy as np
    import torch

    if torch.is_tensor(obj) or isinstance(obj, _PLAIN + (torch.dtype, torch.device, torch.Size)):
        return obj
    if isinstance(obj, np.generic) and not isinstance(obj, (np.object_, np.void)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if type(obj) in (dict, OrderedDict):
        pairs = [(checkpoint_payload(k, f"{where} key {k!r}"), checkpoint_payload(v, f"{where}[{k!r}]"))
                 for k, v in obj.items()]
        if all(k2 is k and v2 is v for (k2, v2), (k, v) in zip(pairs, obj.items())):
            return obj  # unchanged: keep the object (a state_dict's ``_metadata`` too)
        out = type(obj)(pairs)
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if type(obj) in (list, tuple):
        items = [checkpoint_payload(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__qualname__} cannot be stored in a "
                    "checkpoint (only tensors and plain Python values load safely); convert it first "
                    "(numpy array -> torch.from_numpy, dataclass -> dataclasses.asdict, object -> dict)")


def torch_save(path: PathLike, obj: Any) -> None:
    """``torch.save`` atomically, after :func:`checkpoint_payload` (so :func:`torch_load`
    reads it back with the safe loader)."""
    import torch

    payload = checkpoint_payload(obj, str(path))
    with atomic_path(path, ".pt") as tmp:
        torch.save(payload, tmp)


def torch_load(path: PathLike, map_location: str = "cpu", trust: bool | None = None) -> Any:
    """Load a checkpoint with ``torch.load(weights_only=True)`` (tensors and plain values only).

    A file that needs the full pickle loader (it could run code) raises
    :class:`UnsafeCheckpointError` naming the file and the opt-in, unless ``trust`` is true
    or, when ``trust`` is ``None``, :func:`trust_checkpoints`; then it is loaded with
    ``weights_only=False`` and a warning is logged. Never falls back silently.
    """
    import logging
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found (run the stage that writes it first)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        why = _unsafe_reason(str(e))
        if trust is None:
            trust = trust_checkpoints()
        if not trust:
            raise UnsafeCheckpointError(
                f"{path}: refusing to load this file: the safe checkpoint loader (tensors and plain values "
                f"only) rejects it ({why}), and the full pickle loader could run code stored in it. It is an "
                f"old or foreign checkpoint (or not a checkpoint); if you trust its source, rerun with "
                f"`langtail {TRUST_FLAG} ...` or set {TRUST_ENV}=1 (or rewrite it with the current "
                "langtail)") from None
        logging.getLogger(__name__).warning(
            "%s: loading with the UNSAFE pickle loader (%s; trusted via %s / %s=1): "
            "this can run code stored in the file", path, why, TRUST_FLAG, TRUST_ENV)
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated / not a torch file
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}); "
                         "rerun the stage that writes it") from e


def _unsafe_reason(msg: str) -> str:
    """The short reason in torch's weights-only error (without its add_safe_globals advice)."""
    m = re.search(r"Unsupported global: GLOBAL (\S+)", msg)
    if m:
        return f"it references {m.group(1)}"
    line = next((ln.strip() for ln in msg.splitlines() if "WeightsUnpickler error" in ln), "")
    return (line.split(". ")[0] if line else msg.splitlines()[0] if msg else "unpickling error")[:300]


def save_safetensors(path: PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """Save a dict of tensors as safetensors atomically (metadata values must be str)."""
    from safetensors.torch import save_file

    with atomic_path(path, ".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata=dict(metadata or {}))


def load_safetensors(path: PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Return ``(tensors, metadata)`` from a safetensors file."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    return tensors, meta


# ----------------------------------------------------------------------------- cache names

_SLUG_RE = re.compile(r"[^a-z0-9]+")
_SUFFIX_RE = re.compile(r"^(\.[A-Za-z0-9_]+)*$")


def safe_filename(name: str, suffix: str = "", *, label: str | None = None, fallback: str = "item",
                  max_slug: int = 60) -> str:
    """A file name for an arbitrary string (class name, page title, model id...):
    ``<slug>-<sha1(name)[:10]><suffix>``.

    The slug is ``label`` (default ``name``) lower-cased, runs of anything but ``a-z0-9``
    replaced by ``_``, stripped of ``_`` and cut to ``max_slug`` characters (``fallback`` if
    empty); the hash keeps distinct names apart. The result has no separator, no ``..``,
    no NUL and at most ``max_slug + 11 + len(suffix)`` characters, so it can never leave
    the folder it is joined to. ``suffix`` (e.g. ``".json"``) must be ``.``-separated
    ``[A-Za-z0-9_]`` parts.
    """
    if not isinstance(name, str):
        raise TypeError(f"safe_filename: name must be a str, got {type(name).__name__}")
    if not _SUFFIX_RE.match(suffix) or len(suffix) > 32:
        raise ValueError(f"safe_filename: bad suffix {suffix!r} (use e.g. '.json')")
    slug = _SLUG_RE.sub("_", (name if label is None else label).lower()).strip("_")[:max_slug] or fallback
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{slug}-{digest}{suffix}"


def cache_file(cache_dir: PathLike, name: str, suffix: str = "", **kw: Any) -> Path:
    """``cache_dir / safe_filename(name, suffix, **kw)``, the one way a name becomes a cache path.

    Also refuses (``ValueError`` naming both) a path that resolves outside ``cache_dir``,
    e.g. a symlink planted under the cache file's name.
    """
    root = Path(cache_dir)
    path = root / safe_filename(name, suffix, **kw)
    real_root = root.resolve()
    if path.resolve().parent != real_root:
        raise ValueError(f"{path}: cache file for {name[:80]!r} resolves outside its cache directory "
                         f"{real_root} (a symlink?); remove it")
    return path


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def fingerprint(obj: Any, *files: PathLike) -> str:
    """Short sha256 over a JSON-able object and the contents of some files (resume checks)."""
    import hashlib

    h = hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default).encode())
    for f in files:
        h.update(file_sha256(f).encode())
    return h.hexdigest()[:16]
