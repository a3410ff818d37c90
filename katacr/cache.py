"""Content-addressed artifact cache.

An artifact lives at ``<root>/<kind>/<key>/`` where *key* hashes every
input of its build (asset files, config values, tool versions).  A build
runs in a temporary directory beside it and is renamed into place only
when complete, so a crash never leaves a half artifact under a key.  A
file lock keeps two sessions from building the same key at once.  Each
artifact carries ``manifest.json``: inputs, tool versions, duration, log.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

log = logging.getLogger("katacr.cache")

MANIFEST = "manifest.json"


@dataclass
class Artifact:
    """A built artifact: its directory, manifest and whether it was cached."""

    kind: str
    key: str
    path: Path
    manifest: dict[str, Any]
    hit: bool


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_file(path: Path) -> str:
    """sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digest_tree(root: Path) -> str:
    """sha256 over every file's relative path, mode and content."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            h.update(rel.encode() + b"\0")
            if p.is_symlink():
                h.update(b"L" + os.readlink(p).encode())
            else:
                h.update(oct(p.stat().st_mode & 0o777).encode())
                h.update(digest_file(p).encode())
    return h.hexdigest()


def digest_path(path: Path) -> str:
    """Digest of a file or a directory tree, for cache keys."""
    return digest_tree(path) if path.is_dir() else digest_file(path)


def digest_inputs(inputs: Mapping[str, Any]) -> str:
    """The cache key of a build: sha256 of its canonical JSON inputs."""
    return digest_bytes(json.dumps(inputs, sort_keys=True).encode())


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another session building %s",
                     lock_path.stem)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Cache:
    """Artifacts by content, under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()
        self.obtained: list[Artifact] = []

    def lookup(self, kind: str, key: str) -> Artifact | None:
        """Return the complete artifact under *key*, if any."""
        path = self.root / kind / key
        manifest = path / MANIFEST
        if not manifest.is_file():
            return None
        return Artifact(kind, key, path, json.loads(manifest.read_text()),
                        hit=True)

    def obtain(self, kind: str, inputs: Mapping[str, Any],
               build: Callable[[Path], Mapping[str, Any]],
               log_path: Path | None = None) -> Artifact:
        """Return the artifact for *inputs*, building it if absent.

        *build* fills the temporary directory it is given and returns
        extra manifest fields (what it produced).
        """
        key = digest_inputs(inputs)[:24]
        with _locked(self.root / kind / f".{key}.lock"):
            found = self.lookup(kind, key)
            if found:
                log.info("%s: cached %s (built in %.0f s), nothing rebuilt",
                         kind, found.path,
                         found.manifest.get("duration_s", 0))
            else:
                found = self._build(kind, key, inputs, build, log_path)
            self.obtained.append(found)
            return found

    def _build(self, kind: str, key: str, inputs: Mapping[str, Any],
               build: Callable[[Path], Mapping[str, Any]],
               log_path: Path | None) -> Artifact:
        final = self.root / kind / key
        tmp = self.root / kind / f".tmp-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log.info("%s: building %s", kind, key)
        start = time.monotonic()
        try:
            produced = dict(build(tmp))
            manifest = {
                "kind": kind, "key": key, "inputs": dict(inputs),
                "duration_s": round(time.monotonic() - start, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                          time.gmtime()),
                "log": str(log_path) if log_path else None,
                **produced,
            }
            if log_path and log_path.exists():
                shutil.copy2(log_path, tmp / "build.log")
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            os.rename(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
        log.info("%s: built %s in %.0f s", kind, final,
                 manifest["duration_s"])
        return Artifact(kind, key, final, manifest, hit=False)

    def clean_stale(self) -> None:
        """Remove temporary build dirs left by sessions that died."""
        for tmp in self.root.glob("*/.tmp-*"):
            pid = tmp.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                remove_tree(tmp)


def summary(artifacts: list[Artifact]) -> list[str]:
    """One line per artifact: built now or cached, and its build time."""
    lines = []
    seen = set()
    for art in artifacts:
        if (art.kind, art.key) in seen:
            continue
        seen.add((art.kind, art.key))
        took = art.manifest.get("duration_s", 0)
        how = (f"cached, not rebuilt (its build took {took:.0f} s)"
               if art.hit else f"built now in {took:.0f} s")
        lines.append(f"{art.kind:<16} {how:<44} {art.path}")
    return lines


def remove_tree(path: Path) -> None:
    """Remove a tree that may hold read-only directories."""
    if not path.exists():
        return
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            p = Path(dirpath, d)
            if not p.is_symlink():
                os.chmod(p, 0o755)
    shutil.rmtree(path, ignore_errors=True)
