"""Contest ablation through the leaderboard: contest vs all signals equal-weighted vs each entrant
alone vs the best single entrant in hindsight (UNATTAINABLE: chosen after seeing the results).

    .venv/bin/python benchmarks/contest_ablation.py [--start 2016-01-01] [--end 2018-12-31]

Prints one row per variant with the Sharpe and its bootstrap CI. Rules-only entrants, so it runs
offline in about a minute; the centred-score and positive-only variants show the scoring choice.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tradesim.data.load import load_market
from tradesim.evaluate.leaderboard import evaluate_agents

ENTRANTS = ["sma_cross", "macd", "momentum", "buy_and_hold"]
VARIANTS = {
    "contest": {},
    "contest_centred": {"scoring": "centred"},
    "contest_positive_only": {"reward": "positive_only"},
    "contest_equal_signals": {"allocation": "equal"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--start", default="2016-01-01")
    ap.add_argument("--end", default="2018-12-31")
    ap.add_argument("--symbols", default="ALPHA,BRAVO")
    args = ap.parse_args()
    data = load_market(symbols=args.symbols.split(","), source="sample", start=args.start,
                       end=args.end)
    with tempfile.TemporaryDirectory() as tmp:
        specs = []
        for name, params in VARIANTS.items():  # one spec file per variant (same class)
            body = "".join(f'{k} = "{v}"\n' for k, v in params.items())
            path = Path(tmp) / f"{name}.toml"
            path.write_text(f'[agent]\nclass = "tradesim.agents.contest:ContestAgent"\n'
                            f'name = "{name}"\n[agent.params]\n'
                            f"entrants = {ENTRANTS!r}\ndata_agents = []\nresearch_agents = []\n"
                            + body.replace("'", '"'), encoding="utf-8")
            specs.append(str(path))
        board = evaluate_agents(agents=[*specs, *ENTRANTS], data=data, n_boot=500)
    table = board.table.copy()
    table["agent"] = [Path(a).stem for a in table["agent"]]
    alone = table[table["agent"].isin(ENTRANTS)]
    best = alone.sort_values("sharpe", ascending=False).iloc[0]
    print(f"market: {board.meta['market']}  bars: {board.meta['bars']}")
    print(f"{'variant':<34}{'return':>9}{'sharpe':>8}  {'95% CI':<16}{'hardened':>9}")
    for r in table.itertuples(index=False):
        print(f"{r.agent:<34}{r.total_return:>+9.1%}{r.sharpe:>8.2f}  "
              f"[{r.sharpe_low:+.2f}, {r.sharpe_high:+.2f}]  {r.hardened:>8.3f}")
    print(f"{'best single in hindsight (UNATTAINABLE): ' + best.agent:<34}"
          f"{best.total_return:>+9.1%}{best.sharpe:>8.2f}  "
          f"[{best.sharpe_low:+.2f}, {best.sharpe_high:+.2f}]")


if __name__ == "__main__":
    main()
