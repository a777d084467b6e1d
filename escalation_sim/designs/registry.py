"""Registry of design types: YAML ``type`` name -> (spec model, builder)."""
from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass
from typing import Callable, Dict, List, Type

from .base import Design, DesignContext, DesignSpecBase


@dataclass(frozen=True)
class DesignEntry:
    type: str
    spec_model: Type[DesignSpecBase]
    build: Callable[[DesignSpecBase, DesignContext], Design]
    time_to_event: bool = False
    summary: str = ""


_REGISTRY: Dict[str, DesignEntry] = {}


def register(entry: DesignEntry) -> DesignEntry:
    _REGISTRY[entry.type] = entry
    return entry


_BUILTIN = ("threeplusthree", "boin", "crm", "tite")
_loaded = False
_LOAD_LOCK = threading.RLock()


def _load_builtin() -> None:
    """Import the built-in design modules (importing a module registers its designs).

    Under a lock, and ``_loaded`` is set only once every module is in: a second thread never
    sees a half-filled registry."""
    import importlib
    global _loaded
    with _LOAD_LOCK:
        if _loaded:
            return
        for mod in _BUILTIN:
            name = f"{__package__}.{mod}"
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise
        _loaded = True


def registry() -> Dict[str, DesignEntry]:
    if not _loaded:
        _load_builtin()
    return _REGISTRY


def design_types() -> List[str]:
    return list(registry())


def get_entry(type_name: str) -> DesignEntry:
    reg = registry()
    key = type_name.strip().lower() if isinstance(type_name, str) else type_name
    if key in reg:
        return reg[key]
    raise KeyError(unknown_type_message(type_name))


def unknown_type_message(type_name) -> str:
    names = design_types()
    close = difflib.get_close_matches(str(type_name).lower(), names, n=1, cutoff=0.3)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown design type{hint} (known: {', '.join(names)})"


def build_design(spec: DesignSpecBase, ctx: DesignContext) -> Design:
    return get_entry(spec.type).build(spec, ctx)
