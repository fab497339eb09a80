"""The one plug-in path: a thing named by built-in name, ``module:Class``, or entry point.

Agents, data sources and LLM providers are all found the same way, in this order:

1. a built-in name (the caller's table, e.g. ``sma_cross`` -> ``tradesim.agents.baselines:SmaCross``);
2. ``module:Class`` (``module:attr.attr`` for nested names), imported from ``sys.path``;
3. an entry point an installed package declares in the group for that kind, e.g. in its
   ``pyproject.toml``::

       [project.entry-points."tradesim.agents"]
       my_agent = "my_package.agents:MyAgent"

The first match wins; errors name what was tried and how to fix it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, Literal

from tradesim.errors import ConfigError

Kind = Literal["agent", "source", "llm_provider"]
GROUPS: dict[str, str] = {"agent": "tradesim.agents", "source": "tradesim.sources",
                          "llm_provider": "tradesim.llm_providers"}
_WORDS = {"agent": "agent", "source": "data source", "llm_provider": "LLM provider"}


def installed(kind: Kind) -> dict[str, str]:
    """Entry-point names of ``kind`` that installed packages declare -> their ``module:attr``."""
    return {ep.name: ep.value for ep in entry_points(group=GROUPS[kind])}


def target_of(kind: Kind, name: str, builtins: Mapping[str, str]) -> str | None:
    """The ``module:attr`` that ``name`` means (None when it is none of the three forms)."""
    if name in builtins:
        return builtins[name]
    if ":" in name:
        return name
    return installed(kind).get(name)


def resolve(kind: Kind, name: str, builtins: Mapping[str, str]) -> Any:
    """The class or factory ``name`` means; raises ConfigError listing what is available."""
    target = target_of(kind, name, builtins)
    if target is None:
        names = sorted({*builtins, *installed(kind)})
        raise ConfigError(f"unknown {_WORDS[kind]} {name!r}; available: {', '.join(names)} "
                          f"(or 'module:Class', or a package's {GROUPS[kind]!r} entry point)")
    return import_target(target, what=_WORDS[kind])


def import_target(target: str, *, what: str) -> Any:
    """Import ``module:attr`` (dotted attr allowed); errors say which part failed."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what} {target!r} is not 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {target!r}: cannot import module {module_name!r} ({exc}); "
                          "check the spelling and that it is installed or on PYTHONPATH") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"{what} {target!r}: module {module_name!r} has no {attr!r}")
    if not callable(obj):
        raise ConfigError(f"{what} {target!r} is not a class or factory")
    return obj
