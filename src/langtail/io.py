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
import json
import os
import tempfile
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


def torch_save(path: PathLike, obj: Any) -> None:
    """``torch.save`` atomically."""
    import torch

    with atomic_path(path, ".pt") as tmp:
        torch.save(obj, tmp)


def torch_load(path: PathLike, map_location: str = "cpu") -> Any:
    import torch

    return torch.load(path, map_location=map_location, weights_only=False)


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
