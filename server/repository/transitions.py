"""What a model's versions do next: a pure function over a snapshot, which the manager runs.

TF Serving splits its manager the same way: an AspiredVersionPolicy looks at
every version's state and whether it is aspired, and names the next load or
unload (core/aspired_version_policy.h, core/availability_preserving_policy.cc,
core/resource_preserving_policy.cc); the manager carries it out. Here all the
actions due at once are returned, and the manager calls again whenever a load
or unload ends.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class State(enum.IntEnum):
    """TF Serving's ModelVersionStatus.State, with its numbers."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


class Transition(enum.Enum):
    """The order of loads and unloads when versions change (--version_transition_policy).

    Availability preserving: a new version is AVAILABLE before an old one goes, and
    old versions serve while no wanted one is available. Resource preserving: old
    versions go first, so memory never holds two.
    """

    AVAILABILITY_PRESERVING = "availability_preserving"
    RESOURCE_PRESERVING = "resource_preserving"


class Action(enum.Enum):
    LOAD = "load"  # start loading it, or retry a failed load whose time has come
    UNLOAD = "unload"  # unload it once the requests holding it are done
    ABANDON = "abandon"  # waiting to retry, but no longer wanted: give up (END)


@dataclass(frozen=True)
class VersionView:
    """One version as the decision sees it."""

    version: int
    state: State | None  # None: wanted, and not known yet
    aspired: bool
    busy: bool = False  # a load or unload of it is running
    retry_due: bool = False  # LOADING after a failure, and its retry time has come
    held: bool = False  # kept until a reload is in force, under availability preserving
    failed: bool = False  # END because its load failed (not because it was unloaded)


def next_actions(
    versions: Iterable[VersionView], transition: Transition
) -> list[tuple[Action, int]]:
    """Every action due now, unloads before loads, loads highest version first."""
    views = list(versions)
    resource = transition is Transition.RESOURCE_PRESERVING
    actions = [
        (Action.ABANDON, v.version) for v in views
        if not v.aspired and not v.busy and v.state is State.LOADING
    ]
    unwanted = [v for v in views if not v.aspired and not v.busy and v.state is State.AVAILABLE]
    aspired = [v for v in views if v.aspired]
    if not resource:
        # Old versions serve until a wanted one is available (none wanted: they just go),
        # and those a reload holds stay until the reload has moved its labels.
        if aspired and not any(v.state is State.AVAILABLE for v in aspired):
            unwanted = []
        unwanted = [v for v in unwanted if not v.held]
    actions += [(Action.UNLOAD, v.version) for v in unwanted]
    # Resource preserving: nothing new loads while an old version still holds memory.
    wait_for_unloads = resource and any(
        not v.aspired and v.state in (State.AVAILABLE, State.UNLOADING) for v in views
    )
    for view in sorted(aspired, key=lambda v: v.version, reverse=True):
        # New, or unloaded and wanted again (a rollback, or a reload that wants back a
        # version the previous one was unloading); a failed one waits for a fixed copy.
        fresh = view.state is None or (view.state is State.END and not view.failed)
        if view.busy or (fresh and wait_for_unloads):
            continue
        if fresh or view.state is State.START or (
            view.state is State.LOADING and view.retry_due
        ):
            actions.append((Action.LOAD, view.version))
    return actions
