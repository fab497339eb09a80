"""Trajectories of TradingGroup runs as post-training data in the formats TRL trainers accept.

Per decision step and symbol, from a run folder (``tradinggroup_steps.jsonl`` written by the
agent, equity from the run's ledger record):

- ``sft.jsonl``: conversational language modelling, ``{"messages": [system, user, assistant]}``
  (SFTTrainer), kept only where the team's own call agreed with the realised outcome;
- ``preference.jsonl``: conversational preference, ``{"prompt": [...], "chosen": [...],
  "rejected": [...]}`` (DPOTrainer), alternatives buy / hold / sell ranked by their realised
  outcome net of a cost band;
- ``reward.jsonl``: prompt-only ``{"prompt": [...]}`` plus outcome columns (``forward_return``,
  ``account_return``, ``label``, ``horizon``), which GRPOTrainer hands to reward functions.

Labels come from prices and equity ``horizon`` bars after each decision with a fixed band,
never from full-sample quantiles. Rows are split by time: test from ``split`` on, train only
where the outcome was realised at least ``purge`` bars before ``split``. A run whose window
overlaps the target model's knowledge cutoff is refused unless anonymised or forced.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradesim.agents.group.agent import AGENT_FILE, STEPS_FILE
from tradesim.agents.group.roles import SYSTEM
from tradesim.errors import ConfigError
from tradesim.llm.leakage import Anonymizer, leakage_flags

KINDS: tuple[str, ...] = ("sft", "preference", "reward")
_ROLES = frozenset({"system", "user", "assistant"})


class SynthLeakageError(ConfigError):
    """The run's window overlaps the target model's knowledge cutoff (pass anonymize or force)."""


def export(runs: Iterable[str | Path], out: str | Path, *, horizon: int, purge: int,
           split: str, band: float = 0.01, model: str | None = None, anonymize: bool = False,
           force: bool = False) -> dict[str, Any]:
    """Write ``out/{train,test}/{sft,preference,reward}.jsonl`` and ``out/manifest.json``."""
    if horizon < 1 or purge < 0:
        raise ConfigError(f"horizon={horizon}, purge={purge}: horizon must be >= 1 bar and "
                          "purge >= 0 bars")
    cut = np.datetime64(pd.Timestamp(split).tz_localize(None).to_datetime64(), "ns")
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {
        part: {k: [] for k in KINDS} for part in ("train", "test")}
    manifest: dict[str, Any] = {"horizon": horizon, "purge": purge, "split": str(split),
                                "band": band, "anonymized": anonymize, "forced": force,
                                "runs": [], "formats": {
                                    "sft": "conversational language modeling (messages)",
                                    "preference": "conversational preference (prompt, "
                                                  "chosen, rejected)",
                                    "reward": "conversational prompt-only + outcome columns"}}
    for run in runs:
        info = _export_run(Path(run), rows, horizon=horizon, purge=purge, cut=cut, band=band,
                           model=model, anonymize=anonymize, force=force)
        manifest["runs"].append(info)
    target = Path(out)
    for part, kinds in rows.items():
        (target / part).mkdir(parents=True, exist_ok=True)
        for kind, items in kinds.items():
            with (target / part / f"{kind}.jsonl").open("w", encoding="utf-8") as fh:
                for item in items:
                    fh.write(json.dumps(item, sort_keys=True) + "\n")
    manifest["counts"] = {part: {k: len(v) for k, v in kinds.items()}
                          for part, kinds in rows.items()}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def _export_run(folder: Path, rows: dict[str, dict[str, list[dict[str, Any]]]], *,
                horizon: int, purge: int, cut: np.datetime64, band: float, model: str | None,
                anonymize: bool, force: bool) -> dict[str, Any]:
    steps_path = folder / STEPS_FILE
    if not steps_path.is_file():
        raise ConfigError(f"{folder} holds no {STEPS_FILE}; pass run folders saved by a "
                          "backtest of tradinggroup (e.g. tradesim backtest --agent "
                          "tradinggroup --out DIR)")
    steps = [json.loads(x) for x in steps_path.read_text(encoding="utf-8").splitlines() if x]
    settings = (json.loads((folder / AGENT_FILE).read_text(encoding="utf-8"))
                if (folder / AGENT_FILE).is_file() else {})
    equity = pd.read_parquet(folder / "equity.parquet") if (
        folder / "equity.parquet").is_file() else None
    clock = (equity.index.tz_localize(None).to_numpy(dtype="datetime64[ns]")
             if equity is not None and isinstance(equity.index, pd.DatetimeIndex) else
             np.array([np.datetime64(s["time"], "ns") for s in steps]))
    eq = (equity["equity"].to_numpy(dtype=float) if equity is not None
          else np.array([s["account"]["equity"] for s in steps], dtype=float))
    model_name = model or (settings.get("gateway") or {}).get("model") or "gpt-4o-mini"
    start, end = clock[0], clock[-1]
    flags = leakage_flags(model_name, start, end, sources=settings.get("sources", ()),
                          anonymized=anonymize)
    blocking = [f for f in flags if f.level in ("full", "partial")]
    if blocking and not (anonymize or force):
        raise SynthLeakageError(
            f"run {folder} covers {str(start)[:10]}..{str(end)[:10]}, which overlaps the "
            f"knowledge of {model_name} ({blocking[0].message}); a model trained on it could "
            "remember the outcomes. Pass --anonymize (tickers and dates hidden) or --force "
            "(and say so wherever the data is used)")
    pos = {t: i for i, t in enumerate(clock.astype(np.int64).tolist())}
    by_step = {pos.get(int(np.datetime64(s["time"], "ns").astype(np.int64)), -1): s
               for s in steps}
    split_at = int(np.searchsorted(clock, cut, "left"))
    universe = sorted({sym for s in steps for sym in s["symbols"]})
    written = 0
    for i, step in sorted(by_step.items()):
        if i < 0 or i + horizon >= len(clock):
            continue  # outcome not realised within the run: no label
        later = by_step.get(i + horizon)
        part = ("test" if i >= split_at else
                "train" if i + horizon + purge < split_at else None)
        if part is None:
            continue  # inside the purge gap
        acc = float(eq[i + horizon] / eq[i] - 1.0) if eq[i] > 0 else math.nan
        anon = (Anonymizer(symbols=universe, anchor=clock[i]) if anonymize else None)
        for sym, rec in step["symbols"].items():
            then = ((later or {}).get("symbols", {}).get(sym) or {}).get("close")
            if then is None or not rec.get("close"):
                continue
            fwd = float(then / rec["close"] - 1.0)
            label = "up" if fwd > band else "down" if fwd < -band else "flat"
            prompt = [{"role": "system", "content": SYSTEM["decision"]},
                      {"role": "user", "content": _user(sym, step, rec)}]
            own = rec["roles"]["decision"]
            alts = _alternatives(own, fwd, band)
            if anon is not None:
                prompt = anon.anonymize_messages(prompt)
                alts = {k: anon.anonymize(v) for k, v in alts.items()}
            meta = {"run": folder.name, "time": step["time"] if anon is None else f"t{i}",
                    "symbol": sym if anon is None else anon.aliases.get(sym, sym)}
            ranked = sorted(alts, key=lambda a: _value(a, fwd, band), reverse=True)
            if own["action"] == ranked[0]:
                rows[part]["sft"].append({"messages": [*prompt, {"role": "assistant",
                                                                 "content": alts[ranked[0]]}],
                                          **meta})
            if _value(ranked[0], fwd, band) > _value(ranked[-1], fwd, band):
                rows[part]["preference"].append({
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": alts[ranked[0]]}],
                    "rejected": [{"role": "assistant", "content": alts[ranked[-1]]}], **meta})
            rows[part]["reward"].append({"prompt": prompt, "forward_return": round(fwd, 8),
                                         "account_return": round(acc, 8), "label": label,
                                         "horizon": horizon, "action": own["action"], **meta})
            written += 1
    return {"folder": str(folder), "steps": len(steps), "examples": written,
            "model": model_name, "leakage": [f.message for f in flags]}


def _value(action: str, fwd: float, band: float) -> float:
    """Realised value of an alternative: +fwd for buy, -fwd for sell, net of the band; hold 0."""
    return {"buy": fwd - band, "sell": -fwd - band, "hold": 0.0}[action]


def _alternatives(own: dict[str, Any], fwd: float, band: float) -> dict[str, str]:
    """Assistant answers for buy / hold / sell: the team's own one keeps its rationale."""
    out = {}
    for action in ("buy", "hold", "sell"):
        if action == own["action"]:
            answer = {"action": action, "size": own["size"], "confidence": own["confidence"],
                      "rationale": own["summary"][:400]}
        else:
            answer = {"action": action, "size": 0.0 if action == "hold" else 0.5,
                      "confidence": 0.5, "rationale": f"alternative {action} (outcome-ranked)"}
        out[action] = json.dumps(answer, sort_keys=True)
    return out


def _user(sym: str, step: dict[str, Any], rec: dict[str, Any]) -> str:
    """The decision role's view of the step, rebuilt from the trajectory record."""
    r = rec["roles"]
    f = rec["features"]
    acc = step["account"]

    def num(x: Any, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)
    lines = [
        f"Stock {sym}, decision date {step['time'][:10]}. Style: {step['style']['style']} "
        f"({step['style']['summary']}).",
        f"Account: equity {num(acc['equity'], ',.0f')}, drawdown {num(acc['drawdown'], '.1%')}, "
        f"current weight {acc['weights'].get(sym, 0.0) * 100:+.1f}%.",
        f"Market: close {num(rec['close'], '.2f')}, RSI-14 {num(f['rsi14'], '.1f')}, close vs "
        f"SMA-20 {num(f['dev_sma20'], '+.2%')}, vs 20-bar high {num(f['dist_high20'], '+.2%')}, "
        f"volatility {num(f['vol20'], '.2%')}.",
        "Headlines: " + ("; ".join(n["title"] for n in rec["news"]) or "none"),
        f"News analyst: {num(r['news']['score'], '+.2f')} ({r['news']['summary']}).",
        f"Report analyst: {num(r['report']['score'], '+.2f')} ({r['report']['summary']}).",
        f"Trend forecaster: {r['trend']['direction']} ({num(r['trend']['confidence'], '.2f')}; "
        f"{r['trend']['summary']}).",
        f"Experience:\n{rec['experience']['decision']}",
        "Decide buy, sell or hold and the size.",
    ]
    return "\n".join(lines)


def validate(out: str | Path) -> dict[str, int]:
    """Check every exported file against its TRL format; returns row counts (raises)."""
    counts: dict[str, int] = {}
    for path in sorted(Path(out).glob("*/*.jsonl")):
        kind = path.stem
        n = 0
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            row = json.loads(line)
            where = f"{path}:{line_no}"
            if kind == "sft":
                msgs = _messages(row.get("messages"), where, "messages")
                if msgs[-1]["role"] != "assistant":
                    raise ConfigError(f"{where}: the last message must be the assistant's")
            elif kind == "preference":
                _messages(row.get("prompt"), where, "prompt")
                for key in ("chosen", "rejected"):
                    ms = _messages(row.get(key), where, key)
                    if [m["role"] for m in ms] != ["assistant"]:
                        raise ConfigError(f"{where}: {key} must be one assistant message")
                if row["chosen"] == row["rejected"]:
                    raise ConfigError(f"{where}: chosen equals rejected")
            elif kind == "reward":
                _messages(row.get("prompt"), where, "prompt")
                for key in ("forward_return", "account_return", "horizon"):
                    if not isinstance(row.get(key), (int, float)):
                        raise ConfigError(f"{where}: reward column {key} must be a number")
            n += 1
        counts[f"{path.parent.name}/{kind}"] = n
    return counts


def _messages(value: Any, where: str, key: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty list of messages")
    for m in value:
        if (not isinstance(m, dict) or set(m) != {"role", "content"} or m["role"] not in _ROLES
                or not isinstance(m["content"], str)):
            raise ConfigError(f"{where}: {key} holds {m!r:.80}; each message is "
                              "{'role': system|user|assistant, 'content': str}")
    return value
