"""Files derived once per machine from the installed model (the static encoder's token table,
the ONNX encoder's graph), kept under one cache directory and named by a content hash of the
model files they came from, so a new wheel or new builder code never reuses a stale file.

``taxoforge models`` makes them when taxoforge is installed (``make install``, the image's
build), into the environment itself (:func:`installed_dir`): a new machine, or a new pod whose
home is an empty volume, then loads them instead of paying for them (~15 s of two cores) in its
first job. A file is looked for in the cache directory first, then there (:func:`locate`).

Writers each write a temporary file and rename it into place, so a concurrent reader sees the
old name or the whole file, never a torn one; a cache that cannot be written costs time (the
file is made again next time), never correctness.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import structlog

__all__ = [
    "cache_path",
    "content_hash",
    "default_cache_dir",
    "installed_dir",
    "locate",
    "write_atomically",
]

log = structlog.get_logger(__name__)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/taxoforge`` or ``~/.cache/taxoforge``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "taxoforge"


def cache_path(name: str, cache_dir: Path | None = None) -> Path:
    """Where the file ``name`` is made and kept: under ``cache_dir``, default
    :func:`default_cache_dir`."""
    return (cache_dir or default_cache_dir()) / name


def installed_dir() -> Path:
    """Where ``taxoforge models`` puts the files: inside the Python environment
    (``<venv>/share/taxoforge/models``), made with it and gone with it."""
    return Path(sys.prefix) / "share" / "taxoforge" / "models"


def locate(name: str, cache_dir: Path | None = None) -> Path:
    """The file ``name`` to read: the cache directory's (:func:`cache_path`), else the one made
    at install (:func:`installed_dir`), else the cache directory's path, where it is to be
    made."""
    own = cache_path(name, cache_dir)
    if own.is_file():
        return own
    made = installed_dir() / name
    return made if made.is_file() else own


def content_hash(model_dir: Path, names: Sequence[str]) -> str:
    """SHA-256 over the named files of ``model_dir`` (names and bytes).

    Remembered per process while the files' sizes and mtimes stay the same: hashing the
    weights (~90 MB) costs a few hundred milliseconds, and every encoder built asks.
    """
    stamp = tuple((n, (s := (model_dir / n).stat()).st_size, s.st_mtime_ns) for n in names)
    return _hash(model_dir, tuple(names), stamp)


@lru_cache(maxsize=16)
def _hash(model_dir: Path, names: tuple[str, ...], stamp: tuple[object, ...]) -> str:
    del stamp  # part of the memo's key only
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
        with (model_dir / name).open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> bool:
    """Write ``path`` through ``write(file)`` into a temporary file renamed into place.

    Returns False (and logs) when the directory cannot be written: the caller keeps what it
    made in memory and simply makes it again next time.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # derived from public weights: readable by a runtime user
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, path)  # atomic: readers see the old name or the whole file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("model_cache_not_written", path=str(path), error=str(exc))
        return False
    return True
