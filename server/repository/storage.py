"""Model repositories in object stores: gs:// and s3:// base paths, config files and logs.

A base path (``--model_base_path``, a config's ``base_path``), ``--model_config_file``
and a request log's ``filename_prefix`` may name a bucket. Local paths stay ``Path``s; a
bucket is an ``ObjectUrl``, read through fsspec's filesystems (gcsfs, s3fs: the
``object-stores`` extra), configured from TF Serving's environment variables so a
deployment's settings work unchanged (``GOOGLE_APPLICATION_CREDENTIALS``,
``STORAGE_EMULATOR_HOST``; ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``S3_ENDPOINT``, ``S3_USE_HTTPS``, ``S3_VERIFY_SSL``, as TF Serving's
``s3_file_system.cc`` reads them).

An object store has no rename, so a version cannot be published atomically: a version is
listed only once its ``model.onnx`` (or ``saved_model.pb``) is there, and served once two
listings in a row agree (``source.SettleFilter``). Then it is copied whole into a local
cache (``Mirror``), named by its content, and loaded from there like any local version.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import importlib
import logging
import os
import posixpath
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import Any, TypeVar

from onnx_serving.codec.served_model import DEFAULT_MODEL_FILE, SIGNATURES_FILE
from onnx_serving.server.errors import BasePathUnavailable, ConfigError, VersionNotCopied

log = logging.getLogger(__name__)

# scheme -> the fsspec filesystem package that reads it (the object-stores extra).
STORES = {"gs": "gcsfs", "s3": "s3fs"}
INSTALL = "pip install 'onnx-serving[object-stores]'"
# A version is complete once one of these is in it (an object store has no rename): the
# graph, the signatures naming the graphs, or a SavedModel (converted at load).
COMPLETE_MARKERS = (DEFAULT_MODEL_FILE, SIGNATURES_FILE, "saved_model.pb")
# Back-off between listings of a store that failed: doubles from the first, up to the cap.
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 60.0

T = TypeVar("T")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)


@dataclass(frozen=True)
class ObjectUrl:
    """``scheme://bucket/key``; the subset of ``Path`` the repository uses on a base path."""

    scheme: str
    bucket: str
    key: str = ""  # no leading or trailing "/"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}"

    @property
    def path(self) -> str:
        """``bucket/key``, as fsspec names it."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    @property
    def name(self) -> str:
        return posixpath.basename(self.key) or self.bucket

    @property
    def parent(self) -> ObjectUrl:
        return replace(self, key=posixpath.dirname(self.key))

    def __truediv__(self, other: str | PurePath) -> ObjectUrl:
        key = posixpath.normpath(posixpath.join("/", self.key, str(other))).strip("/")
        return replace(self, key=key)

    def absolute(self) -> ObjectUrl:
        """A URL is absolute already (as ``Path.absolute``, for code given either)."""
        return self


Location = Path | ObjectUrl


def location(raw: str) -> Location:
    """A local path or a bucket; an unsupported scheme, or a store whose package is not
    installed, is refused by name (``gs://b`` is never read as the relative ``gs:/b``)."""
    match = _SCHEME.fullmatch(raw)
    if match is None:
        return Path(raw)
    scheme, rest = match[1].lower(), match[2]
    if scheme == "file":
        return Path(rest)
    package = STORES.get(scheme)
    if package is None:
        raise ConfigError(
            f"{raw}: the {scheme}:// scheme is not supported; onnx-serving reads local paths, "
            f"{' and '.join(f'{s}://' for s in STORES)}"
        )
    if (why := _unimportable(package)) is not None:
        raise ConfigError(
            f"{raw}: reading {scheme}:// needs the {package} package ({why}): {INSTALL}"
        )
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ConfigError(f"{raw}: no bucket named")
    return ObjectUrl(scheme, bucket, posixpath.normpath("/" + key).strip("/"))


def _unimportable(package: str) -> str | None:
    """Why a store's package cannot be imported, or None. An import, not a look-up: an
    install can be there and broken (a dependency missing), and would fail at the first
    read instead of being refused here."""
    try:
        importlib.import_module(package)
    except ImportError as exc:
        return str(exc)
    return None


class StoreError(OSError):
    """What a store's client raised, as an OSError with the errno of its cause, so that
    GetModelStatus gives it a code as for a local path (NOT_FOUND, PERMISSION_DENIED, ...)."""


def _store_error(exc: Exception) -> OSError:
    if isinstance(exc, FileNotFoundError):
        return StoreError(errno.ENOENT, str(exc))
    if isinstance(exc, PermissionError):
        return StoreError(errno.EACCES, str(exc))
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if any(w in lowered for w in ("accessdenied", "access denied", "forbidden", "403",
                                  "invalidaccesskeyid", "signaturedoesnotmatch", "credentials")):
        return StoreError(errno.EACCES, text)
    if "nosuchbucket" in lowered or "404" in lowered:
        return StoreError(errno.ENOENT, text)
    return StoreError(errno.EIO if not isinstance(exc, OSError) else exc.errno or errno.EIO,
                      text)


def _calling_store(call: Callable[..., T], *args: Any) -> T:
    """Runs one call to a store's client. Their errors are of many unrelated types (botocore,
    aiohttp, google-auth): each becomes an OSError here, the one type callers handle."""
    try:
        return call(*args)
    except Exception as exc:  # any client error means "the store cannot be read now"
        raise _store_error(exc) from exc


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() not in ("0", "false", "no")


@functools.cache
def filesystem(scheme: str) -> Any:
    """The fsspec filesystem for a scheme, configured from TF Serving's environment."""
    if scheme == "s3":
        import s3fs  # optional: the object-stores extra

        https = _flag("S3_USE_HTTPS", True)
        endpoint = os.environ.get("S3_ENDPOINT") or None
        if endpoint and "://" not in endpoint:
            endpoint = f"{'https' if https else 'http'}://{endpoint}"
        client: dict[str, Any] = {"verify": _flag("S3_VERIFY_SSL", True)}
        if os.environ.get("AWS_REGION"):
            client["region_name"] = os.environ["AWS_REGION"]
        return s3fs.S3FileSystem(
            endpoint_url=endpoint, use_ssl=https, client_kwargs=client,
            config_kwargs={"connect_timeout": 10, "retries": {"max_attempts": 2}},
            use_listings_cache=False, skip_instance_cache=True,
        )
    # gcsfs.core's, not the package's default (its experimental hierarchical-namespace
    # class asks a gRPC control API for each bucket's layout first: a minute's timeout
    # where that API is not served, as with emulators). Objects are listed the same way.
    from gcsfs.core import GCSFileSystem  # optional: the object-stores extra

    # An emulator takes no credentials; else GOOGLE_APPLICATION_CREDENTIALS, or the VM's.
    token = "anon" if os.environ.get("STORAGE_EMULATOR_HOST") else None
    return GCSFileSystem(token=token, use_listings_cache=False, skip_instance_cache=True)


def read_text(path: Location) -> str:
    if isinstance(path, Path):
        return path.read_text()
    return bytes(_calling_store(filesystem(path.scheme).cat_file, path.path)).decode()


def upload(local: Path, url: ObjectUrl) -> None:
    """Copies a finished local file to ``url``."""
    _calling_store(filesystem(url.scheme).put_file, str(local), url.path)


def remove(url: ObjectUrl) -> None:
    _calling_store(filesystem(url.scheme).rm_file, url.path)


# (path in the version, size, and a tag that changes with the content: the store's, or a
# local file's mtime in ns) of each file, sorted.
Files = tuple[tuple[str, int, int | str], ...]


def list_children(model_name: str, base: ObjectUrl) -> dict[str, Files]:
    """Each child "directory" of ``base`` that is complete (it holds a
    ``COMPLETE_MARKERS`` file), with its files.

    A prefix with no object under it cannot be told from a missing one, so it is no
    answer about the versions (TF Serving's file system source finds no base path there).
    """
    fs = filesystem(base.scheme)
    try:
        found = _calling_store(functools.partial(fs.find, detail=True), base.path)
    except OSError as exc:
        raise BasePathUnavailable(model_name, base, exc) from exc
    if not found:
        raise BasePathUnavailable(
            model_name, base, StoreError(errno.ENOENT, f"no object under {base}")
        )
    children: dict[str, list[tuple[str, int, int | str]]] = {}
    for name, info in found.items():
        child, _, inside = posixpath.relpath(name, base.path).partition("/")
        if inside:
            tag = next((str(info[k]) for k in ("ETag", "etag", "md5Hash", "generation",
                                               "LastModified", "updated") if info.get(k)), "")
            children.setdefault(child, []).append((inside, int(info.get("size") or 0), tag))
    return {child: tuple(sorted(entries)) for child, entries in children.items()
            if any(entry[0] in COMPLETE_MARKERS for entry in entries)}


class Backoff:
    """Keeps a failing store from being asked at every poll: after a failure the next try
    waits 1 s, then twice as long each time, up to a minute; a success resets it. Until
    the next try, the last error stands (GetModelStatus keeps saying why)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failed: dict[ObjectUrl, tuple[float, float, BasePathUnavailable]] = {}

    def call(self, url: ObjectUrl, attempt: Callable[[], T]) -> T:
        failed = self._failed.get(url)
        if failed is not None and self._clock() < failed[0]:
            raise failed[2]
        try:
            result = attempt()
        except BasePathUnavailable as exc:
            delay = BACKOFF_FIRST_S if failed is None else min(failed[1] * 2, BACKOFF_MAX_S)
            self._failed[url] = (self._clock() + delay, delay, exc)
            raise
        self._failed.pop(url, None)
        return result


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def spool_prefix(prefix: ObjectUrl) -> Path:
    """Where request log files for ``prefix`` are written before they are uploaded."""
    return default_cache_dir() / "request-log" / _digest(str(prefix)) / prefix.name


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"onnx-serving-object-store-{os.getuid()}"


class Mirror:
    """Local copies of versions held in object stores, under ``root``.

    A copy is at ``<root>/<hash of the base path>/<its last name>/<version>-<hash of its
    files>``: a changed version is copied afresh, an unchanged one is reused (after a
    restart too, and by every ``--num_workers`` process), and a copy is only seen whole,
    as it is written under a temporary name and renamed into place. The parent of a copy
    is named as the base path is, as a local version's parent is.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _base_dir(self, base: ObjectUrl) -> Path:
        return self.root / _digest(str(base)) / base.name

    def target(self, base: ObjectUrl, child: str, files: Files) -> Path:
        """Where the copy of ``base/child`` holding ``files`` goes."""
        return self._base_dir(base) / f"{child}-{_digest(repr(files))}"

    def local(self, model_name: str, base: ObjectUrl, child: str, files: Files) -> Path:
        """The local directory holding a copy of ``base/child``, copied first if needed;
        VersionNotCopied (a BasePathUnavailable: what serves is kept) if it cannot be."""
        target = self.target(base, child, files)
        if not target.is_dir():
            try:
                self._copy(base / child, files, target)
            except OSError as exc:
                raise VersionNotCopied(model_name, base / child, exc) from exc
        return target

    def _copy(self, url: ObjectUrl, files: Files, target: Path) -> None:
        fs = filesystem(url.scheme)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            for inside, size, _tag in files:
                local = partial / inside
                local.parent.mkdir(parents=True, exist_ok=True)
                _calling_store(fs.get_file, f"{url.path}/{inside}", str(local))
                if local.stat().st_size != size:
                    raise StoreError(errno.EAGAIN, f"{url}/{inside} changed while copied")
            try:
                partial.rename(target)
            except OSError:
                if not target.is_dir():
                    raise  # else another process copied it first
            log.info("Copied %s (%d files) to %s", url, len(files), target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def prune(self, base: ObjectUrl, keep: set[Path]) -> None:
        """Removes the copies of ``base``'s versions that are not in ``keep`` (the copies of
        what the store holds now), and partial copies left by a process that died."""
        where = self._base_dir(base)
        if where.is_dir():
            for copy in where.iterdir():
                if copy not in keep and not _partial_in_use(copy):
                    shutil.rmtree(copy, ignore_errors=True)


def _partial_in_use(path: Path) -> bool:
    """A temporary copy younger than an hour may still be written by another process."""
    try:
        return ".partial-" in path.name and time.time() - path.stat().st_mtime < 3600
    except OSError:
        return False
