"""Finds the version directories under a model's base path.

A version is offered for loading only once it looks finished: its files
(names, sizes, modification times) must be unchanged between two scans. A
version copied in slowly therefore waits rather than loads half-written; the
safe way to publish is still to write elsewhere and rename the finished
directory into place (docs/lifecycle.md). A base path in an object store has no
rename: there a version is listed once complete, always waits for two scans, and is
copied to a local cache before it is offered (server/repository/storage.py).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from onnx_serving.server.errors import BasePathUnavailable
from onnx_serving.server.repository.storage import Files, Location, ObjectUrl, list_children

log = logging.getLogger(__name__)

_INT64_MAX = 2**63 - 1

# What changes while a copy runs: each file's relative path, size, and mtime (or tag).
Fingerprint = Files
P = TypeVar("P", Path, ObjectUrl)


@dataclass(frozen=True)
class VersionDir(Generic[P]):
    """A version's directory: local (what the manager loads), or in an object store."""

    version: int
    path: P
    fingerprint: Fingerprint


def parse_version(name: str) -> int | None:
    """A directory name that parses as a non-negative int64 ("00000123" is 123)."""
    if not name.isascii() or not name.isdigit():
        return None
    version = int(name)
    return version if version <= _INT64_MAX else None


def fingerprint(path: Path) -> Fingerprint:
    entries: list[tuple[str, int, int | str]] = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:  # removed while we looked: the next scan sees the new state
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def scan_versions(model_name: str, base_path: Location) -> dict[int, VersionDir[Any]]:
    """Version → directory. A base path that holds no version is warned about, not fatal.

    Raises BasePathUnavailable when the base path cannot be listed (gone, not a
    directory, no permission, out of file descriptors...): that is no answer about its
    versions, and must not read as "none", which would unload them all. So does a
    version directory gone between the listing and its own check (the base path renamed
    away or replaced while this scan ran): the next scan answers.
    """
    versions: dict[int, VersionDir[Any]] = {}
    if isinstance(base_path, ObjectUrl):
        for name, files in list_children(model_name, base_path).items():
            version = parse_version(name)
            if version is not None:
                versions[version] = VersionDir(version, base_path / name, files)
    else:
        try:
            children = list(base_path.iterdir())
        except OSError as exc:
            raise BasePathUnavailable(model_name, base_path, exc) from exc
        for child in children:
            version = parse_version(child.name)
            if version is not None and _is_directory(model_name, base_path, child):
                versions[version] = VersionDir(version, child, fingerprint(child))
    if not versions:
        log.warning(
            "No versions of servable %s found under base path %s. Did you forget to name "
            "your leaf directory as a number (eg. '/1/')?", model_name, base_path,
        )
    return versions


def _is_directory(model_name: str, base_path: Path, child: Path) -> bool:
    """Whether a listed entry is a directory (following symlinks, as TF Serving does). A
    symlink that leads nowhere is not a version; any other entry that cannot be checked
    (gone since the listing, even if back by now) leaves the scan unanswered."""
    try:
        return stat.S_ISDIR(child.stat().st_mode)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP) and child.is_symlink():
            return False
        raise BasePathUnavailable(model_name, base_path, exc) from exc


class SettleFilter:
    """Passes a version on once two consecutive scans saw the same files in it.

    A version keeps being passed on while its directory exists, with the files
    of its last settled scan, so touching a served version never unloads it;
    a changed copy is passed on once it has settled again. Versions are told
    apart by directory, so a model moved to another base path (and back) keeps
    what it knew of each.
    """

    def __init__(self) -> None:
        self._bases: set[tuple[str, Location]] = set()
        self._seen: dict[tuple[str, Location], Fingerprint] = {}
        self._stable: dict[tuple[str, Location], VersionDir[Any]] = {}

    def forget(self, model_name: str) -> None:
        self._bases = {b for b in self._bases if b[0] != model_name}
        for table in (self._seen, self._stable):
            for key in [k for k in table if k[0] == model_name]:
                del table[key]

    def settled(
        self, model_name: str, base_path: Location, scanned: dict[int, VersionDir[Any]]
    ) -> dict[int, VersionDir[Any]]:
        """A model's first scan of a local base path (at start-up, or once a reload adds
        the model or moves it there) is taken as it is, as TF Serving does; in an object
        store, where no rename publishes a version whole, two scans must agree."""
        initial = (model_name, base_path) not in self._bases and isinstance(base_path, Path)
        self._bases.add((model_name, base_path))
        for found in scanned.values():
            key = (model_name, found.path)
            if found.fingerprint and (initial or self._seen.get(key) == found.fingerprint):
                self._stable[key] = found
            self._seen[key] = found.fingerprint
        paths = {found.path for found in scanned.values()}
        for table in (self._seen, self._stable):
            for key in [k for k in table
                        if k[0] == model_name and k[1].parent == base_path and k[1] not in paths]:
                del table[key]
        stable = {v: self._stable.get((model_name, found.path)) for v, found in scanned.items()}
        return {v: found for v, found in stable.items() if found is not None}
