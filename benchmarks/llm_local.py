"""LLM gateway figures: embedded local model latency / valid-output rate / memory, logprob
direction accuracy, cached re-run decisions/s, and concurrent vs sequential calls.

Run: python benchmarks/llm_local.py [--n 4]. One line per figure. The local model proves the
offline path; its decisions are not meant to be good.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from tradesim.llm import Gateway, GatewayConfig, TradeDecision
from tradesim.llm.testing import FakeOpenAIServer, Reply

_BULL = ["The stock soared 15% on blowout earnings and a new buyback.",
         "Shares jumped 12% after the company beat estimates and raised guidance.",
         "Record profits; the shares rallied 10% to an all-time high.",
         "Analysts upgraded the stock after sales doubled; shares up 9%."]
_BEAR = ["The stock crashed 20% after fraud charges and the CEO resigned.",
         "Shares plunged 18% after a profit warning and a dividend cut.",
         "Bankruptcy filing; the shares collapsed 40%.",
         "Regulators halted sales of the main product; shares down 25%."]
_SYSTEM = "You are a cautious equity trader. Reply with JSON only."


def _messages(facts: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": _SYSTEM},
            {"role": "user", "content": f"{facts} Decide buy, sell or hold."}]


def local(n: int) -> None:
    from tradesim.llm.local import LocalLlamaProvider, LocalModel, LogprobDecider

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    model = LocalModel(n_threads=os.cpu_count())
    print(f"local load_s {time.perf_counter() - start:.2f} model {model.path.name}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GatewayConfig(provider="local", cache_path=str(Path(tmp) / "c.sqlite"), max_tokens=64)
        with Gateway(config=cfg, provider=LocalLlamaProvider(model=model)) as gw:
            prompts = [_messages(f) for f in (_BULL + _BEAR)[:n]]
            start = time.perf_counter()
            results = [gw.complete(m, schema=TradeDecision) for m in prompts]
            took = time.perf_counter() - start
            valid = sum(r.parsed is not None and not r.abstained for r in results)
            actions = [r.decision().action for r in results]
            print(f"local grammar_json latency_s_per_decision {took / n:.2f}")
            print(f"local grammar_json valid_rate {valid / n:.2f} ({valid}/{n}) actions {actions}")
            start = time.perf_counter()
            for m in prompts:
                gw.complete(m, schema=TradeDecision)
            print(f"cached_rerun decisions_per_s {n / (time.perf_counter() - start):.0f}")
    decider = LogprobDecider(model=model)
    decider.calibrate([(f, "buy") for f in _BULL[:2]] + [(f, "sell") for f in _BEAR[:2]])
    held = [(f, "buy") for f in _BULL[2:]] + [(f, "sell") for f in _BEAR[2:]]
    start = time.perf_counter()
    right = sum(decider.decide(f).action == label for f, label in held)
    print(f"local logprob latency_s_per_decision {(time.perf_counter() - start) / len(held):.2f}")
    print(f"local logprob held_out_accuracy {right / len(held):.2f} ({right}/{len(held)})")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"local peak_rss_mb {rss:.0f} (model adds about {rss - rss0:.0f})")


def concurrency(calls: int = 16, latency: float = 0.2) -> None:
    good = '{"action":"hold","weight":0,"confidence":0.5,"rationale":"flat"}'
    os.environ.setdefault("OPENAI_API_KEY", "sk-benchmark-not-a-real-key")
    with FakeOpenAIServer(default=Reply(content=good), latency_s=latency) as srv:
        times = {}
        for conc in (1, 8):
            cfg = GatewayConfig(provider="openai", base_url=srv.base_url, mode="live",
                                concurrency=conc)
            with Gateway(config=cfg) as gw:
                gw.complete(_messages("warm-up"))
                start = time.perf_counter()
                gw.gather([{"messages": _messages(f"day {i}")} for i in range(calls)])
                times[conc] = time.perf_counter() - start
    print(f"server_latency_s {latency} calls {calls} sequential_s {times[1]:.2f} "
          f"concurrent8_s {times[8]:.2f} speedup {times[1] / times[8]:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4, help="local prompts to time")
    args = parser.parse_args()
    concurrency()
    local(args.n)
