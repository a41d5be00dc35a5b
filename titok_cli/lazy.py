"""Package attributes imported on first use, so that importing a package stays cheap."""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any


def lazy_attribute(package: str, table: dict[str, str], name: str) -> Any:
    """`package.name`, imported from the submodule `table[name]` and kept in the package from then on."""
    module = table.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", package), name)
    setattr(sys.modules[package], name, value)
    return value
