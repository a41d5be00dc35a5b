"""ImageNet-1k class names: ids <-> human-readable names for class-conditional generation.

The table lives in ``data/imagenet_classes.json`` (built from timm's ImageNet metadata, see
``data/README.md``), so users can write ``--class "golden retriever"`` instead of ``207``.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from titok_cli.errors import UsageError

NUM_CLASSES = 1000
_DATA_FILE = "imagenet_classes.json"


@dataclass(frozen=True)
class _Table:
    """The loaded JSON plus lookup indexes keyed by normalised name."""

    names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...]
    wnids: tuple[str, ...]
    primary_index: dict[str, tuple[int, ...]]
    synonym_index: dict[str, tuple[int, ...]]


def _normalise(text: str) -> str:
    """Fold case, underscores, hyphens and runs of spaces so "Golden_Retriever" finds its class."""
    return " ".join(re.sub(r"[_\-]+", " ", text).casefold().split())


def _build_index(groups: list[list[str]]) -> dict[str, tuple[int, ...]]:
    """Map each normalised name to the sorted class ids that carry it."""
    index: dict[str, set[int]] = {}
    for class_id, group in enumerate(groups):
        for name in group:
            index.setdefault(_normalise(name), set()).add(class_id)
    return {key: tuple(sorted(ids)) for key, ids in index.items()}


@lru_cache(maxsize=1)
def _table() -> _Table:
    """Read the packaged JSON once; a broken install should fail loudly, not guess."""
    package = __name__.rpartition(".")[0]
    raw = (resources.files(package) / "data" / _DATA_FILE).read_text(encoding="utf-8")
    data = json.loads(raw)
    names = [str(n) for n in data["names"]]
    synonyms = [[str(s) for s in group] for group in data["synonyms"]]
    wnids = [str(w) for w in data.get("wnids", [])]
    if len(names) != NUM_CLASSES or len(synonyms) != NUM_CLASSES:
        raise RuntimeError(f"{_DATA_FILE} must list {NUM_CLASSES} classes, found {len(names)}")
    return _Table(
        names=tuple(names),
        synonyms=tuple(tuple(g) for g in synonyms),
        wnids=tuple(wnids),
        primary_index=_build_index([[n] for n in names]),
        synonym_index=_build_index(synonyms),
    )


def class_names() -> list[str]:
    """The primary name of every ImageNet-1k class, index = class id."""
    return list(_table().names)


def class_name(class_id: int) -> str:
    """The primary name of one class id, e.g. 207 -> "golden retriever"."""
    return _table().names[_check_range(class_id)]


def _check_range(class_id: int) -> int:
    """Reject ids outside 0..999 with a usage error rather than an IndexError."""
    if isinstance(class_id, bool) or not 0 <= class_id < NUM_CLASSES:
        raise UsageError(f"class id {class_id!r} is out of range (expected 0..{NUM_CLASSES - 1})")
    return int(class_id)


def _describe(ids: tuple[int, ...]) -> str:
    """List candidate classes with all their names so the user can pick one id."""
    table = _table()
    parts = []
    for i in ids:
        all_names = (table.names[i], *table.synonyms[i])
        parts.append(f"{i} ({', '.join(all_names)})")
    return "; ".join(parts)


def resolve_class(value: str | int) -> int:
    """Turn an id, a decimal string or a class name into an ImageNet class id.

    Names are matched case-insensitively with "_", "-" and extra spaces folded; primary names win
    over synonyms. Ambiguous and unknown names raise UsageError that says what to type instead.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return _check_range(value)
    if not isinstance(value, str):
        raise UsageError(f"class must be an id or a name, got {value!r}")
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return _check_range(int(text))

    table = _table()
    # An exact (case-sensitive) primary spelling settles "Cardigan" (264) vs "cardigan" (474).
    exact = [i for i, name in enumerate(table.names) if name == " ".join(text.split())]
    if len(exact) == 1:
        return exact[0]
    if text in table.wnids:  # WordNet id such as "n02099601"
        return table.wnids.index(text)

    key = _normalise(text)
    for index in (table.primary_index, table.synonym_index):
        ids = index.get(key)
        if ids is None:
            continue
        if len(ids) == 1:
            return ids[0]
        raise UsageError(f"class name {value!r} is ambiguous; use an id: {_describe(ids)}")

    # Suggest names in their original spelling (a primary spelling wins over a synonym's).
    spelled: dict[str, str] = {}
    for name in (*table.names, *(s for group in table.synonyms for s in group)):
        spelled.setdefault(_normalise(name), name)
    close = difflib.get_close_matches(key, list(spelled), n=3, cutoff=0.6)
    hint = ""
    if close:
        by_key = {**table.synonym_index, **table.primary_index}
        listed = ", ".join(f"{spelled[c]!r} ({'/'.join(map(str, by_key[c]))})" for c in close)
        hint = f"; did you mean {listed}?"
    raise UsageError(f"unknown ImageNet class {value!r}{hint}")


def class_from_wnid(wnid: str) -> int | None:
    """ImageNet class id of a WordNet id folder name (`n02099601` -> 207), or None."""
    table = _table()
    try:
        return table.wnids.index(wnid)
    except ValueError:
        return None
