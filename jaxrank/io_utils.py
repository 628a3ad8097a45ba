"""Atomic file writes: a reader sees the old file or the new one, never half.

Files and folders made here get the permissions `open()` / `mkdir()` would give
them (0666 / 0777 less the process umask), not mkstemp's 0600 / mkdtemp's 0700:
with `umask 002` in a group-owned setgid workspace, teammates read and resume
each other's runs (BUILD.md, "A team workspace").
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator


def current_umask() -> int:
  """The process umask, read without changing it (Linux: /proc; else set-and-restore)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)  # not thread-safe, hence the /proc path first
  os.umask(mask)
  return mask


def honour_umask(path: str | os.PathLike, *, fd: int | None = None) -> None:
  """Gives a file (or folder) made by mkstemp (mkdtemp) the mode open() (mkdir()) gives.

  A folder's setgid bit (inherited from a setgid parent) is kept.
  """
  if fd is not None:
    os.fchmod(fd, 0o666 & ~current_umask())
    return
  st = os.stat(path)
  base = 0o777 if os.path.isdir(path) else 0o666
  os.chmod(path, (base & ~current_umask()) | (st.st_mode & stat.S_ISGID))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
  """Writes `data` to a temp file beside `path`, fsyncs, then renames over it."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    honour_umask(tmp, fd=fd)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise
  return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
  return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
  return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
  """Yields a temp folder beside `path`; on success renames it to `path`.

  The folder gets mkdir()'s permissions (the umask's), not mkdtemp's 0700.
  Raises FileExistsError (and leaves `path` untouched) if `path` appeared
  meanwhile, so two writers racing for one name leave exactly one complete copy.
  On any error the temp folder is removed.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
  try:
    honour_umask(tmp)
    yield tmp
    try:
      os.rename(tmp, path)  # atomic; fails if `path` is a non-empty folder
    except OSError as e:
      if path.exists():
        raise FileExistsError(f"{path} already exists") from e
      raise
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
