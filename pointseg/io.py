"""Result files are written atomically (temp file + rename): a run killed at any moment leaves either the
old file or the new one, never half of one."""

from __future__ import annotations

import json
import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


def _replace_atomically(path: Path, write) -> None:
    """``write(tmp)`` then rename over ``path``; a failed write (full disk, read-only) removes its temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_text(tmp: Path, text: str) -> None:
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    _replace_atomically(Path(path), lambda tmp: _write_text(tmp, text))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN; a class absent from a split has no IoU
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(_jsonable(r)) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    _replace_atomically(Path(path), lambda tmp: torch.save(obj, tmp))


def load_checkpoint_file(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint read as data (``weights_only=True``: tensors and plain types, never code), with one clear error
    for a truncated or corrupt file (a full disk, a copy cut short) and another for one that holds anything else
    (a pickled object, possibly a payload: users share checkpoints)."""

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise UnsafeCheckpointError(
                f"{path}: refused: it holds Python objects, not only tensors and plain data, and pointseg loads a "
                f"checkpoint as data, never as code ({str(e).splitlines()[0][:160]}). Load it only if you trust "
                "its source, with torch.load(weights_only=False), and save its tensors again") from None
        raise CorruptFileError(f"{path}: truncated or corrupt checkpoint ({str(e)[:120]})") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CorruptFileError(f"{path}: truncated or corrupt checkpoint ({str(e)[:120]})") from e


class CorruptFileError(ValueError):
    """A stored file that cannot be read back; the message names it."""


class UnsafeCheckpointError(CorruptFileError):
    """A checkpoint holding pickled objects beyond tensors and plain data: refused, never unpickled."""
