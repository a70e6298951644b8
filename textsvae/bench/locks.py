"""Per-run locks in a results folder: one process at a time runs a run, and a dead holder's lock is taken over.

A lock holds its holder's host, pid and job id (Slurm's, when there is one), and its holder touches it
every HEARTBEAT_S (`Heartbeat`). A lock of a dead process on this host is taken over at once; a lock
from another host (a worker on another node of a shared filesystem) once its heartbeat is older than
`stale_after` seconds ($TEXTSVAE_LOCK_STALE_S, default STALE_AFTER_S).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0


class LockBusy(RuntimeError):
    pass


def stale_after() -> float:
    return float(os.environ.get("TEXTSVAE_LOCK_STALE_S", STALE_AFTER_S))


def read_lock(path: Path) -> tuple[dict, float] | None:
    """(holder, seconds since its last heartbeat), or None without a lock."""
    try:
        seen, age = path.read_bytes(), time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        info = json.loads(seen or b"{}")
    except ValueError:
        info = {}
    return (info if isinstance(info, dict) else {}), age


class Heartbeat:
    """Touch a held lock every `interval` seconds from a daemon thread, until stopped."""

    def __init__(self, path: Path, interval: float = HEARTBEAT_S):
        self.path, self.interval = path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return


def pid_alive(pid: int) -> bool:
    """Whether process pid runs on this host: it exists and is not a zombie (a dead child nobody has
    reaped yet still answers kill(pid, 0))."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
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


_BEATING: dict[Path, Heartbeat] = {}


def release_lock(path: Path) -> None:
    """Stop the lock's heartbeat and remove it."""
    beat = _BEATING.pop(path, None)
    if beat is not None:
        beat.__exit__(None, None, None)
    path.unlink(missing_ok=True)


def acquire_lock(folder: Path, heartbeat: float | None = HEARTBEAT_S) -> Path:
    """Create folder/.lock atomically with its holder, touched every `heartbeat` seconds until
    release_lock (None: no heartbeat); a lock of a dead process on this host, or one from another
    host whose heartbeat is older than stale_after(), is taken over."""
    path = folder / ".lock"
    host = socket.gethostname()
    holder = json.dumps({"pid": os.getpid(), "host": host, "job": os.environ.get("SLURM_JOB_ID", ""),
                         "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
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
            dead = info.get("host") == host and isinstance(info.get("pid"), int) and not pid_alive(info["pid"])
            silent = info.get("host") not in (None, host) and age > stale_after()
            if dead or silent or (not seen and age > STALE_EMPTY_LOCK_S):
                why = f"no heartbeat for {age:.0f} s" if silent else "dead process"
                log.warning("removing a stale lock (%s %s on %s): %s", why, info.get("pid", "?"),
                            info.get("host", "?"), path)
                if _remove_stale_lock(path, seen):
                    continue
            job = f", job {info['job']}" if info.get("job") else ""
            raise LockBusy(f"run {folder.name} is held by process {info.get('pid')} on {info.get('host')}{job} "
                           f"(delete {path} if that process is gone)") from None
        if heartbeat is not None:
            _BEATING[path] = Heartbeat(path, heartbeat).__enter__()
        return path
    raise LockBusy(f"could not lock {path}")

