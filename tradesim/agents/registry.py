"""Agents by name: built-in baselines, any ``module:Class``, or a TOML spec in ``agents/``.

A spec file reads ``[agent] class = "sma_cross"`` (a built-in name or ``module:Class``), with an
optional ``name`` and an ``[agent.params]`` table of keyword arguments for the class.
"""

from __future__ import annotations

import importlib
import inspect
import tomllib
from pathlib import Path
from typing import Any

from tradesim.contracts import Agent
from tradesim.errors import ConfigError

SPEC_DIR = Path(__file__).resolve().parents[2] / "agents"

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


def available_agents() -> list[str]:
    """Built-in agent names plus the spec names found in the repository's ``agents/`` folder."""
    specs = {p.stem for p in SPEC_DIR.glob("*.toml")} if SPEC_DIR.is_dir() else set()
    return sorted(set(BUILTINS) | specs)


def load_agent(spec: str, **params: Any) -> Agent:
    """Build an agent from a built-in name, ``module:Class``, or a TOML spec (name or path).

    Keyword ``params`` go to the class constructor and override a spec file's ``[agent.params]``.
    """
    path = _spec_path(spec)
    if path is not None:
        return _from_toml(path, params)
    if ":" in spec:
        return _build(_import(spec), params, spec=spec)
    if spec in BUILTINS:
        return _build(_import(BUILTINS[spec]), params, spec=spec)
    raise ConfigError(f"unknown agent {spec!r}; available: {', '.join(available_agents())} "
                      "(or pass 'module:Class' or the path of a .toml spec)")


def _spec_path(spec: str) -> Path | None:
    """The TOML file ``spec`` names: a ``.toml`` path, or ``agents/<spec>.toml`` if it exists."""
    candidate = Path(spec)
    if candidate.suffix == ".toml":
        if not candidate.is_file():
            raise ConfigError(f"agent spec file {spec} does not exist; specs in {SPEC_DIR}: "
                              f"{', '.join(available_agents())}")
        return candidate
    named = SPEC_DIR / f"{spec}.toml"
    return named if ":" not in spec and "/" not in spec and named.is_file() else None


def _from_toml(path: Path, params: dict[str, Any]) -> Agent:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"agent spec {path} is not valid TOML: {exc}") from None
    table = doc.get("agent")
    if not isinstance(table, dict) or not isinstance(table.get("class"), str):
        raise ConfigError(f"agent spec {path} needs an [agent] table with class = \"...\" "
                          f"(a built-in name such as {', '.join(BUILTINS)} or 'module:Class')")
    target = table["class"]
    if ":" not in target and target not in BUILTINS:
        raise ConfigError(f"agent spec {path}: class {target!r} is neither a built-in "
                          f"({', '.join(BUILTINS)}) nor 'module:Class'")
    base = table.get("params", {})
    if not isinstance(base, dict):
        raise ConfigError(f"agent spec {path}: [agent.params] must be a table of keyword arguments")
    agent = _build(_import(BUILTINS.get(target, target)), {**base, **params}, spec=str(path))
    if "name" in table:
        agent.name = str(table["name"])
    return agent


def _import(target: str) -> type:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"agent class {target!r}: cannot import module {module_name!r} "
                          f"({exc}); check the spelling and that it is on PYTHONPATH") from None
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"agent class {target!r}: module {module_name!r} has no {attr!r}")
    if not callable(obj):
        raise ConfigError(f"agent class {target!r} is not a class or factory")
    return obj


def _build(cls: Any, params: dict[str, Any], *, spec: str) -> Agent:
    """Instantiate ``cls`` with ``params``, naming any parameter it does not accept."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        known = [n for n, p in signature.parameters.items()
                 if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        unknown = [k for k in params if k not in known]
        if unknown and not accepts_any:
            raise ConfigError(f"agent {spec!r}: unknown parameter(s) {', '.join(unknown)}; "
                              f"accepted: {', '.join(known) or 'none'}")
    try:
        agent = cls(**params)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        hint = (" (pass each as --param NAME=VALUE, or agent_params in a config)"
                if "missing" in str(exc) else "")
        raise ConfigError(f"agent {spec!r}: bad parameters {params}: {exc}{hint}") from None
    if not isinstance(agent, Agent):
        raise ConfigError(f"agent {spec!r} built a {type(agent).__name__}, which lacks the Agent "
                          "interface (name, decide, update, state, load_state); subclass "
                          "tradesim.contracts.BaseAgent")
    return agent
