"""Finds the version directories under a model's base path."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

_INT64_MAX = 2**63 - 1


def parse_version(name: str) -> int | None:
    """A directory name that parses as a non-negative int64 ("00000123" is 123)."""
    if not name.isascii() or not name.isdigit():
        return None
    version = int(name)
    return version if version <= _INT64_MAX else None


def scan_versions(model_name: str, base_path: Path) -> dict[int, Path]:
    """Version → directory. A base path that holds no version is warned about, not fatal."""
    try:
        children = list(base_path.iterdir())
    except OSError as exc:
        log.error("Cannot list base path %s of model %s: %s", base_path, model_name, exc)
        return {}
    versions: dict[int, Path] = {}
    for child in children:
        version = parse_version(child.name)
        if version is not None and child.is_dir():
            versions[version] = child
    if not versions:
        log.warning(
            "No versions of servable %s found under base path %s. Did you forget to name "
            "your leaf directory as a number (eg. '/1/')?", model_name, base_path,
        )
    return versions
