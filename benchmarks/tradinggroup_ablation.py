"""TradingGroup ablations through the leaderboard API, with bootstrap Sharpe CIs.

Variants: the full team, no reflection, no risk manager, fixed (balanced) style, and a bare
team (no news, reflection or risk manager). Every variant runs quantitative-only: the
"quantitative-only vs LLM" ablation needs a real model, which this offline benchmark does not
have (docs/tradinggroup.md). Prints one line per variant:
``variant  sharpe [low, high]  total_return  max_drawdown``, plus buy-and-hold as the peer
measured in the same run.

    python benchmarks/tradinggroup_ablation.py [--symbols ALPHA,BRAVO] [--start 2012-01-01]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

VARIANTS: dict[str, dict[str, object]] = {
    "tg_full": {},
    "tg_no_reflection": {"reflection": False},
    "tg_no_risk_manager": {"risk_manager": False},
    "tg_fixed_style": {"style": "balanced"},
    "tg_no_news_no_reflection_no_risk": {"reflection": False, "risk_manager": False,
                                         "news_items": 0},
}


def _spec(folder: Path, name: str, params: dict[str, object]) -> str:
    lines = ["[agent]", 'class = "tradesim.agents.group:TradingGroup"', f'name = "{name}"',
             "", "[agent.params]", "quant_only = true"]
    for k, v in params.items():
        lines.append(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}"
                     .replace("'", '"'))
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(symbols: list[str], start: str | None, end: str | None, n_boot: int = 1000) -> list[str]:
    from tradesim.data.load import load_market
    from tradesim.evaluate.leaderboard import evaluate_agents

    data = load_market(symbols=symbols, source="sample", start=start, end=end)
    with tempfile.TemporaryDirectory() as tmp:
        specs = [_spec(Path(tmp), n, p) for n, p in VARIANTS.items()]
        # the variants' look-ahead check runs in the conformance suite; here they are compared
        board = evaluate_agents(agents=[*specs, "buy_and_hold"], data=data, seeds=1,
                                n_boot=n_boot, experiment="tradinggroup_ablation",
                                lookahead=False)
    lines = []
    for r in board.table.itertuples(index=False):
        name = Path(r.agent).stem
        lines.append(f"{name:34s} sharpe {r.sharpe:+.2f} [{r.sharpe_low:+.2f}, "
                     f"{r.sharpe_high:+.2f}]  return {r.total_return:+.1%}  "
                     f"max_dd {r.max_drawdown:.1%}  DSR {r.deflated_sharpe:.2f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", default="ALPHA,BRAVO")
    ap.add_argument("--start", default=None)
    ap.add_argument("--end", default=None)
    args = ap.parse_args()
    for line in run(args.symbols.split(","), args.start, args.end):
        print(line)


if __name__ == "__main__":
    main()
