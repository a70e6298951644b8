"""Per-run locks in a results folder: one process at a time runs a run, and a dead holder's lock is taken over."""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)


class LockBusy(RuntimeError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


STALE_EMPTY_LOCK_S = 30.0  # an empty lock this old (made by an older version whose holder died before writing it)


def _remove_stale_lock(path: Path, seen: bytes) -> bool:
    """Remove path if it still holds exactly `seen` (the dead holder's lock), by renaming it aside first.

    Unlinking by name could remove a live lock that another process made after `seen` was read; a
    rename moves one file atomically, and a lock that turns out not to be `seen` is put back.
    """
    aside = path.with_name(f".lock.stale.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True  # someone else removed it: try to create ours
    if aside.read_bytes() == seen:
        aside.unlink(missing_ok=True)
        return True
    try:  # a live lock: restore it (unless yet another process has locked meanwhile)
        os.link(aside, path)
    except OSError as exc:
        log.warning("could not restore the lock %s (%s)", path, exc)
    aside.unlink(missing_ok=True)
    return False


def _create_lock(path: Path, content: str) -> None:
    """Make path with its content in one step: written under another name, then hard-linked, which fails
    with FileExistsError if path exists. A process killed meanwhile leaves no empty lock behind (one
    made by O_CREAT before its write would hold the run until STALE_EMPTY_LOCK_S had passed)."""
    draft = path.with_name(f".lock.new.{os.getpid()}")
    draft.write_text(content)
    try:
        os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)


def acquire_lock(folder: Path) -> Path:
    """Create folder/.lock atomically with its holder; a lock left by a dead process on this host is taken over."""
    path = folder / ".lock"
    host = socket.gethostname()
    holder = json.dumps({"pid": os.getpid(), "host": host, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    for _ in range(3):
        try:
            _create_lock(path, holder)
        except FileExistsError:
            try:
                seen = path.read_bytes()
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile
            try:
                info = json.loads(seen or b"{}")
            except ValueError:
                info = {}
            info = info if isinstance(info, dict) else {}
            dead = info.get("host") == host and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"])
            if dead or (not seen and age > STALE_EMPTY_LOCK_S):
                log.warning("removing a stale lock of dead process %s: %s", info.get("pid", "?"), path)
                if _remove_stale_lock(path, seen):
                    continue
            raise LockBusy(f"run {folder.name} is held by process {info.get('pid')} on {info.get('host')} "
                           f"(delete {path} if that process is gone)") from None
        return path
    raise LockBusy(f"could not lock {path}")

