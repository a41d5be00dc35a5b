"""ImageNet class table: ids <-> names, and forgiving but unambiguous name lookup."""

from __future__ import annotations

import pytest

from titok_cli.errors import UsageError
from titok_cli.imagenet import class_name, class_names, resolve_class


def test_table_shape() -> None:
    names = class_names()
    assert len(names) == 1000
    assert all(isinstance(n, str) and n for n in names)
    assert names[207] == "golden retriever"
    assert names[0] == "tench"
    assert class_name(207) == "golden retriever"
    names.append("mutating the copy must not change the table")
    assert len(class_names()) == 1000


def test_resolve_by_id() -> None:
    assert resolve_class(207) == 207
    assert resolve_class(0) == 0
    assert resolve_class(999) == 999
    assert resolve_class("207") == 207
    assert resolve_class(" 42 ") == 42


@pytest.mark.parametrize(
    "value",
    [
        "golden retriever",
        "Golden Retriever",
        "golden_retriever",
        "GOLDEN-RETRIEVER",
        "  golden   retriever ",
    ],
)
def test_resolve_name_variants(value: str) -> None:
    assert resolve_class(value) == 207


def test_resolve_synonym_and_wnid() -> None:
    assert resolve_class("tabby cat") == 281  # synonym of "tabby"
    assert resolve_class("tabby") == 281
    assert resolve_class("n02099601") == 207


def test_exact_spelling_disambiguates_case_only_duplicates() -> None:
    assert resolve_class("Cardigan") == 264  # Cardigan Welsh corgi
    assert resolve_class("cardigan") == 474  # the sweater


def test_ambiguous_name_lists_ids() -> None:
    with pytest.raises(UsageError) as info:
        resolve_class("crane")
    message = str(info.value)
    assert "ambiguous" in message and "134" in message and "517" in message


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UsageError) as info:
        resolve_class("golden retreiver")
    message = str(info.value)
    assert "golden retreiver" in message
    assert "'golden retriever' (207)" in message
    assert message.count("(") <= 4  # the quoted input plus at most 3 suggestions


def test_unknown_name_without_suggestion() -> None:
    with pytest.raises(UsageError, match="unknown ImageNet class"):
        resolve_class("qqqqzzzz")


@pytest.mark.parametrize("value", [1000, -1, "1000", "-3", 10**9])
def test_out_of_range(value: int | str) -> None:
    with pytest.raises(UsageError, match="out of range"):
        resolve_class(value)


def test_class_name_out_of_range() -> None:
    with pytest.raises(UsageError):
        class_name(1000)


def test_rejects_bool() -> None:
    with pytest.raises(UsageError):
        resolve_class(True)  # type: ignore[arg-type]
