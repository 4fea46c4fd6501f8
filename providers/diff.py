"""Desired vs actual vs state: the pure diff every Python provider shares.

Resources are keyed by (type, name). `actual` is None when the caller did not
refresh (plan --no-refresh): the state is then taken as the truth. `normalise`
says which keys are the same resource (exact by default, as file paths on
Linux; a provider whose names ignore case folds them).
Standard library only; returns plain dicts in the protocol's change shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]
Attrs = dict[str, Any]
Equal = Callable[[str, Any, Any], bool]
Normalise = Callable[[Key], Key]


def plain_equal(attr: str, a: Any, b: Any) -> bool:
    return bool(a == b)


def exact(key: Key) -> Key:
    return key


class SameKey(ValueError):
    """Two keys of one mapping normalise to the same resource."""


@dataclass
class Diff:
    changes: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    unmanaged: list[Key] = field(default_factory=list)  # exist live, not in state


def diff_resources(
    desired: Mapping[Key, Attrs],
    state: Mapping[Key, Attrs],
    actual: Mapping[Key, Attrs] | None,
    immutable: frozenset[str] = frozenset(),
    equal: Equal = plain_equal,
    normalise: Normalise = exact,
) -> Diff:
    """Plan changes so that live == desired, touching only what state owns.

    Keys are matched after `normalise`; changes and drift name a resource by its
    key in state when it has one (that is what state owns), else by the desired key.

    - desired, not in state, not live: create
    - desired, not in state, live: unmanaged (the provider refuses or adopts)
    - desired, in state, gone live: drift (deleted) + create
    - desired, in state, live and different: update, or replace when an
      immutable attribute differs; drift when live differs from state
    - not desired, in state: delete (or only drift when already gone live)
    """
    wanted, owned = _index(desired, normalise), _index(state, normalise)
    live = owned if actual is None else _index(actual, normalise)
    result = Diff()
    for same in sorted(set(wanted) | set(owned)):
        key = (owned.get(same) or wanted[same])[0]
        want, known, have = _attrs(wanted, same), _attrs(owned, same), _attrs(live, same)
        if known is not None and have is None:
            result.drift.append(_drift(key, known, None))
        elif known is not None and have is not None and _differs(known, have, equal):
            result.drift.append(_drift(key, known, have))
        if want is None:
            if known is not None and have is not None:
                result.changes.append(_change("delete", key, have, None))
            continue
        if known is None and have is not None:
            result.unmanaged.append(key)
            continue
        if have is None:
            result.changes.append(_change("create", key, None, want))
            continue
        changed = _changed_attrs(have, want, equal)
        if not changed:
            continue
        forcing = sorted(a for a in changed if a in immutable)
        action = "replace" if forcing else "update"
        result.changes.append(_change(action, key, have, want, forcing))
    return result


def _index(resources: Mapping[Key, Attrs], normalise: Normalise) -> dict[Key, tuple[Key, Attrs]]:
    """normalised key -> (the caller's key, attributes); two keys for one resource are refused."""
    index: dict[Key, tuple[Key, Attrs]] = {}
    for key, attrs in resources.items():
        same = normalise(key)
        if same in index:
            raise SameKey(f"{index[same][0][0]} {index[same][0][1]!r} and {key[1]!r} are the same resource")
        index[same] = (key, attrs)
    return index


def _attrs(index: dict[Key, tuple[Key, Attrs]], same: Key) -> Attrs | None:
    found = index.get(same)
    return None if found is None else found[1]


def _changed_attrs(before: Attrs, after: Attrs, equal: Equal) -> list[str]:
    return sorted(a for a in after if not equal(a, before.get(a), after[a]))


def _differs(a: Attrs, b: Attrs, equal: Equal) -> bool:
    return any(not equal(k, a.get(k), b.get(k)) for k in set(a) | set(b))


def _change(action: str, key: Key, before: Attrs | None, after: Attrs | None, forcing: list[str] | None = None) -> dict[str, Any]:
    return {
        "action": action,
        "resource": {"type": key[0], "name": key[1]},
        "before": before,
        "after": after,
        "replace_paths": forcing or [],
    }


def _drift(key: Key, before: Attrs, after: Attrs | None) -> dict[str, Any]:
    return {"resource": {"type": key[0], "name": key[1]}, "before": before, "after": after}
