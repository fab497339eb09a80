"""Contest ablation through the leaderboard (what `tradesim evaluate` runs): the contest vs all
signals equal-weighted vs each entrant alone, plus the best single entrant in hindsight, which is
UNATTAINABLE (chosen after seeing the results, so no trader could have picked it in advance).

    .venv/bin/python benchmarks/contest_ablation.py [--start 2016-01-01] [--end 2018-12-31]

The same table from the command line (the variants are shipped specs, agents/contest_rules*.toml):

    tradesim evaluate --agents contest_rules,contest_rules_equal,contest_rules_centred,\
contest_rules_positive,sma_cross,macd,momentum,buy_and_hold --symbols ALPHA,BRAVO \
--start 2016-01-01 --end 2018-12-31

Prints one row per variant with the Sharpe, its bootstrap CI and the hardened score. Rules-only
entrants, so it runs offline in well under a minute.
"""

from __future__ import annotations

import argparse

from tradesim.data.load import load_market
from tradesim.evaluate.leaderboard import evaluate_agents

ENTRANTS = ["sma_cross", "macd", "momentum", "buy_and_hold"]
VARIANTS = ["contest_rules", "contest_rules_equal", "contest_rules_centred",
            "contest_rules_positive"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--start", default="2016-01-01")
    ap.add_argument("--end", default="2018-12-31")
    ap.add_argument("--symbols", default="ALPHA,BRAVO")
    args = ap.parse_args()
    data = load_market(symbols=args.symbols.split(","), source="sample", start=args.start,
                       end=args.end)
    board = evaluate_agents(agents=[*VARIANTS, *ENTRANTS], data=data, n_boot=1000)
    table = board.table
    alone = table[table["agent"].isin(ENTRANTS)]
    best = alone.sort_values("sharpe", ascending=False).iloc[0]
    print(f"market: {board.meta['market']}  bars: {board.meta['bars']}")
    print(f"{'variant':<52}{'return':>9}{'sharpe':>8}  {'95% CI':<16}{'hardened':>9}")
    for r in table.itertuples(index=False):
        print(f"{r.agent:<52}{r.total_return:>+9.1%}{r.sharpe:>8.2f}  "
              f"[{r.sharpe_low:+.2f}, {r.sharpe_high:+.2f}]  {r.hardened:>8.3f}")
    print(f"{'best single entrant in hindsight (UNATTAINABLE): ' + best.agent:<52}"
          f"{best.total_return:>+9.1%}{best.sharpe:>8.2f}  "
          f"[{best.sharpe_low:+.2f}, {best.sharpe_high:+.2f}]  {best.hardened:>8.3f}")
    by = table.set_index("agent")
    c, e = by.loc["contest_rules"], by.loc["contest_rules_equal"]
    verdict = "beats" if c.hardened > e.hardened else "loses to"
    print(f"contest {verdict} equal-weighting on the hardened score "
          f"({c.hardened:.3f} vs {e.hardened:.3f}); Sharpe {c.sharpe:.2f} vs {e.sharpe:.2f}, "
          f"CIs overlap: {c.sharpe_low <= e.sharpe_high and e.sharpe_low <= c.sharpe_high}")


if __name__ == "__main__":
    main()
