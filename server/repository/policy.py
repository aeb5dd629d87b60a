"""Which of the versions on disk a model serves: TF Serving's version policies."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Latest:
    num_versions: int = 1

    def select(self, versions: Iterable[int]) -> set[int]:
        return set(sorted(versions)[-max(self.num_versions, 1) :])


@dataclass(frozen=True)
class All:
    def select(self, versions: Iterable[int]) -> set[int]:
        return set(versions)


@dataclass(frozen=True)
class Specific:
    versions: frozenset[int]

    def select(self, versions: Iterable[int]) -> set[int]:
        return set(versions) & self.versions


VersionPolicy = Latest | All | Specific
