"""Agents by name: built-in classes, TOML specs, ``module:Class``, or installed entry points.

A spec file reads ``[agent] class = "sma_cross"`` (a built-in class name, ``module:Class`` or an
entry point), with an optional ``name`` and an ``[agent.params]`` table. Specs are searched in
the folders of ``TRADESIM_SPEC_PATH`` (``os.pathsep``-separated; a user's own specs), then in
the specs shipped with the package (the repository's top-level ``agents/`` folder, packaged as
``tradesim/specs``), so a checkout and an installed wheel resolve the same names.

:func:`resolve_agent` turns a name plus overrides into a :class:`ResolvedAgent`: the class, and
the parameters resolved whole (spec, then overrides merged key by key into nested tables, then
the class's defaults), which the run writes to ``config.json`` so it reruns exactly.
"""

from __future__ import annotations

import inspect
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tradesim.contracts import Agent
from tradesim.errors import ConfigError
from tradesim.plugins import installed, resolve

BUILTINS: dict[str, str] = {
    "buy_and_hold": "tradesim.agents.baselines:BuyAndHold",
    "equal_weight": "tradesim.agents.baselines:EqualWeight",
    "sma_cross": "tradesim.agents.baselines:SmaCross",
    "macd": "tradesim.agents.baselines:Macd",
    "dual_thrust": "tradesim.agents.baselines:DualThrust",
    "momentum": "tradesim.agents.baselines:TimeSeriesMomentum",
    "qtnet": "tradesim.agents.qtnet:QTNetAgent",
    "llm_analyst": "tradesim.agents.llm_agent:LLMAnalyst",
}
SPEC_PATH_ENV = "TRADESIM_SPEC_PATH"


@dataclass(frozen=True)
class ResolvedAgent:
    """What an agent name means: its class, display name, resolved parameters and spec file."""

    name: str
    target: str  # the class as "module:Class" (or the name a plug-in was found under)
    cls: Any
    params: dict[str, Any]  # resolved whole: spec + overrides + defaults (JSON values)
    spec: str | None  # the spec file it came from, if any

    def build(self) -> Agent:
        """A fresh agent with these parameters."""
        return _build(self.cls, self.params, spec=self.name, name=self.name)


def spec_dirs() -> list[Path]:
    """Folders searched for ``NAME.toml``: ``TRADESIM_SPEC_PATH`` entries, then packaged specs."""
    user = [Path(p).expanduser() for p in os.environ.get(SPEC_PATH_ENV, "").split(os.pathsep) if p]
    return [*user, Path(str(files("tradesim") / "specs"))]


def available_agents() -> list[str]:
    """Built-in class names, spec names found in :func:`spec_dirs`, and installed plug-ins."""
    specs = {p.stem for d in spec_dirs() if d.is_dir() for p in d.glob("*.toml")}
    return sorted(set(BUILTINS) | specs | set(installed("agent")))


def load_agent(spec: str, **params: Any) -> Agent:
    """Build an agent from a built-in name, a TOML spec (name or path), ``module:Class`` or an
    installed plug-in; ``params`` override the spec's ``[agent.params]`` (tables merge)."""
    return resolve_agent(spec, params).build()


def resolve_agent(spec: str, overrides: Mapping[str, Any] | None = None) -> ResolvedAgent:
    """What ``spec`` with ``overrides`` would build, parameters resolved whole (nothing built)."""
    overrides = dict(overrides or {})
    path = _spec_path(spec)
    if path is not None:
        return _from_toml(path, overrides)
    if ":" not in spec and spec not in BUILTINS and spec not in installed("agent"):
        raise ConfigError(f"unknown agent {spec!r}; available: {', '.join(available_agents())} "
                          "(or pass 'module:Class' or the path of a .toml spec)")
    cls = resolve("agent", spec, BUILTINS)
    return ResolvedAgent(name=str(getattr(cls, "name", spec)), target=BUILTINS.get(spec, spec),
                         cls=cls,
                         params=_resolve_params(cls, overrides, spec=spec), spec=None)


def _spec_path(spec: str) -> Path | None:
    """The TOML file ``spec`` names: a ``.toml`` path, or ``NAME.toml`` in :func:`spec_dirs`."""
    candidate = Path(spec)
    if candidate.suffix == ".toml":
        if not candidate.is_file():
            raise ConfigError(f"agent spec file {spec} does not exist; known specs: "
                              f"{', '.join(available_agents())}")
        return candidate
    if ":" in spec or "/" in spec or os.sep in spec:
        return None
    for folder in spec_dirs():
        named = folder / f"{spec}.toml"
        if named.is_file():
            return named
    return None


def _from_toml(path: Path, overrides: dict[str, Any]) -> ResolvedAgent:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"agent spec {path} is not valid TOML: {exc}") from None
    table = doc.get("agent")
    if not isinstance(table, dict) or not isinstance(table.get("class"), str):
        raise ConfigError(f"agent spec {path} needs an [agent] table with class = \"...\" "
                          f"(a built-in name such as {', '.join(BUILTINS)} or 'module:Class')")
    target = table["class"]
    if ":" not in target and target not in BUILTINS and target not in installed("agent"):
        raise ConfigError(f"agent spec {path}: class {target!r} is neither a built-in "
                          f"({', '.join(BUILTINS)}), 'module:Class', nor an installed plug-in")
    base = table.get("params", {})
    if not isinstance(base, dict):
        raise ConfigError(f"agent spec {path}: [agent.params] must be a table of parameters")
    cls = resolve("agent", target, BUILTINS)
    name = str(table.get("name") or getattr(cls, "name", path.stem))
    params = _resolve_params(cls, merge_params(base, overrides), spec=str(path))
    return ResolvedAgent(name=name, target=BUILTINS.get(target, str(target)), cls=cls,
                         params=params, spec=str(path))


def merge_params(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` over ``base``, key by key into nested tables (a ``gateway`` override of one
    field keeps the spec's other gateway fields)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_params(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_params(cls: Any, given: dict[str, Any], *, spec: str) -> dict[str, Any]:
    """``given`` validated and completed with the class's defaults, as JSON values.

    Classes with a typed ``Params`` model validate through it; other classes (a user's plain
    agent) are checked against the constructor signature and completed from its defaults.
    """
    model = getattr(cls, "Params", None)
    if isinstance(model, type) and issubclass(model, BaseModel) and model.model_fields:
        from pydantic import ValidationError

        unknown = [k for k in given if k not in model.model_fields]
        if unknown:
            raise ConfigError(f"agent {spec!r}: unknown parameter(s) {', '.join(unknown)}; "
                              f"accepted: {', '.join(model.model_fields) or 'none'}")
        try:
            return model(**given).model_dump(mode="json")
        except ValidationError as exc:
            lines = [f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}"
                     for e in exc.errors()]
            raise ConfigError(f"agent {spec!r}: invalid parameter(s):\n  " + "\n  ".join(lines)
                              + "\n(set them in the spec's [agent.params] or pass "
                              "--param NAME=VALUE)") from None
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return dict(given)
    params = signature.parameters.values()
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params)
    known = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = [k for k in given if k not in known]
    if unknown and not accepts_any:
        raise ConfigError(f"agent {spec!r}: unknown parameter(s) {', '.join(unknown)}; "
                          f"accepted: {', '.join(known) or 'none'}")
    missing = [p.name for p in params if p.name in known and p.default is p.empty
               and p.name not in given]
    if missing:
        raise ConfigError(f"agent {spec!r}: missing parameter(s) {', '.join(missing)}; pass each "
                          "as --param NAME=VALUE, or in the spec's [agent.params]")
    out = {p.name: p.default for p in params if p.name in known and _jsonable(p.default)}
    out.update(given)
    return out


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _build(cls: Any, params: dict[str, Any], *, spec: str, name: str) -> Agent:
    """Instantiate ``cls`` with ``params``, naming any parameter it does not accept."""
    try:
        agent = cls(**params)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"agent {spec!r}: bad parameters {params}: {exc}") from None
    if not isinstance(agent, Agent):
        raise ConfigError(f"agent {spec!r} built a {type(agent).__name__}, which lacks the Agent "
                          "interface (name, start, decide, update, state, load_state, stop); "
                          "subclass tradesim.contracts.BaseAgent")
    if name != getattr(agent, "name", None):
        agent.name = name
    return agent
