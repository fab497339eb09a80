"""LLM gateway figures: embedded local model latency with and without pruned grammar decoding,
valid-output rate, logprob direction accuracy on held-out prompts, memory, cached re-run
decisions/s, and concurrent vs sequential calls against a server with fixed latency.

Run: python benchmarks/llm_local.py [--n 6] [--n-stock 3] [--threads 1] [--repeats 2].
One line per figure.
"stock" is llama-cpp-python's own create_chat_completion with the same grammar (its sampler
chain checks the grammar against the whole vocabulary at every token); "pruned" is
LocalModel.chat. Both run on the same prompts, interleaved, in this process, so machine load
hits both alike. The local model proves the offline path; its decisions are not meant to be good.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tradesim.llm import Gateway, GatewayConfig, TradeDecision
from tradesim.llm.schema import json_schema, parse
from tradesim.llm.testing import FakeOpenAIServer, Reply

# Disjoint from tradesim.llm.local.CALIBRATION_SET and from the decider's few-shot examples.
_HELD_OUT: tuple[tuple[str, str], ...] = (
    ('Profits tripled and the board approved a large special dividend; shares up 14%.', 'buy'),
    ('The drug won approval and the stock surged 30%.', 'buy'),
    ('Quarterly sales hit a record and margins widened; the shares climbed 8%.', 'buy'),
    ('Three brokers raised their targets after strong orders; stock up 11%.', 'buy'),
    ('The firm paid off all its debt and raised its outlook; shares rose 7%.', 'buy'),
    ('Earnings crushed expectations and the stock hit a record high.', 'buy'),
    ('Strong demand lifted revenue 40%; shares rallied 13%.', 'buy'),
    ('A takeover bid at a 35% premium sent the shares soaring.', 'buy'),
    ('Customer growth accelerated and the company announced a buyback; shares up 10%.', 'buy'),
    ('Cash flow doubled and guidance was raised again; the stock gained 9%.', 'buy'),
    ('The auditor resigned and the shares sank 35%.', 'sell'),
    ('A product recall and lawsuits sent the stock down 22%.', 'sell'),
    ('The company missed earnings badly and slashed guidance; shares fell 19%.', 'sell'),
    ('Losses widened and the dividend was suspended; stock down 16%.', 'sell'),
    ('The main factory burned down and production stopped; shares dropped 21%.', 'sell'),
    ('Sales collapsed and the firm warned it may default on its debt.', 'sell'),
    ('Accounting irregularities were found; the shares plunged 28%.', 'sell'),
    ('The trial drug failed and the stock crashed 50%.', 'sell'),
    ('Key customers cancelled orders and revenue dropped 30%; shares slid 17%.', 'sell'),
    ('The CEO was arrested and trading in the shares was halted after a 40% fall.', 'sell'),
)
_SYSTEM = "You are a cautious equity trader. Reply with JSON only."


def _messages(facts: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": _SYSTEM},
            {"role": "user", "content": f"{facts} Decide buy, sell or hold."}]


def _valid(text: str) -> bool:
    return parse(text, TradeDecision)[0] is not None


def _best_of(run: Callable[[Any], dict[str, Any]], messages: list[dict[str, str]], *,
             model: Any, repeats: int) -> tuple[float, float, dict[str, Any]]:
    """Fastest wall and CPU seconds of ``repeats`` runs, each from an empty KV cache."""
    walls, cpus = [], []
    for _ in range(repeats):
        model.llama.reset()
        start, c0 = time.perf_counter(), time.process_time()
        out = run(messages)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), out


def local(*, n: int, n_stock: int, threads: int | None, repeats: int,
          max_tokens: int = 64) -> None:
    from tradesim.llm.local import LocalLlamaProvider, LocalModel, LogprobDecider

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    model = LocalModel(n_threads=threads)
    print(f"local load_s {time.perf_counter() - start:.2f} model {model.path.name} "
          f"file_mb {model.path.stat().st_size / 2**20:.0f} threads {model.llama.n_threads}")
    schema = json_schema(TradeDecision)
    grammar = model.grammar(schema)
    prompts = [_messages(f) for f, _ in _HELD_OUT[::2][:n]]
    runs = {
        "stock": lambda m: model.llama.create_chat_completion(
            messages=m, temperature=0.0, max_tokens=max_tokens, grammar=grammar),
        "pruned": lambda m: model.chat(m, max_tokens=max_tokens, schema=schema),
        "no_grammar": lambda m: model.chat(m, max_tokens=max_tokens)}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}  # process CPU s: less hit by other load
    gen = {k: 0 for k in runs}
    valid = {k: 0 for k in runs}
    fallbacks = tokens = same = 0
    for i, m in enumerate(prompts):
        texts = {}
        for kind, run in runs.items():
            if kind == "stock" and i >= n_stock:
                continue
            w, c, out = _best_of(run, m, model=model, repeats=repeats)
            wall[kind].append(w)
            cpu[kind].append(c)
            texts[kind] = out["choices"][0]["message"]["content"]
            valid[kind] += _valid(texts[kind])
            gen[kind] += out["usage"]["completion_tokens"]
            if kind == "pruned":
                fallbacks += out["usage"]["grammar_fallbacks"]
                tokens += out["usage"]["completion_tokens"] + 1
        same += "stock" in texts and texts["stock"] == texts["pruned"]
    for kind, xs in wall.items():
        if xs:
            print(f"local {kind} latency_s_per_decision median {statistics.median(xs):.2f} "
                  f"cpu_s_median {statistics.median(cpu[kind]):.2f} cpu_ms_per_generated_token "
                  f"{1000 * sum(cpu[kind]) / gen[kind]:.0f} valid_rate {valid[kind] / len(xs):.2f} "
                  f"({valid[kind]}/{len(xs)}) (best of {repeats}, cold KV cache)")
    if wall["stock"]:
        k = len(wall["stock"])
        speed_wall = sum(wall["stock"]) / sum(wall["pruned"][:k])
        speed_cpu = sum(cpu["stock"]) / sum(cpu["pruned"][:k])
        print(f"local pruned_vs_stock speedup wall {speed_wall:.1f}x cpu {speed_cpu:.1f}x "
              f"(same {k} prompts; identical output {same}/{k})")
    checks = tokens * model.top_k + fallbacks * model.llama.n_vocab()  # end tokens left out
    print(f"local pruned grammar_fallbacks_per_decision {fallbacks / len(prompts):.1f} "
          f"grammar_token_checks_per_decision about {checks / len(prompts):.0f} vs stock "
          f"{tokens * model.llama.n_vocab() / len(prompts):.0f}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GatewayConfig(provider="local", cache_path=str(Path(tmp) / "c.sqlite"),
                            max_tokens=max_tokens)
        with Gateway(config=cfg, provider=LocalLlamaProvider(model=model)) as gw:
            start = time.perf_counter()
            results = [gw.complete(m, schema=TradeDecision) for m in prompts]
            took = (time.perf_counter() - start) / len(prompts)
            ok = sum(r.parsed is not None and not r.abstained for r in results)
            print(f"local gateway (system prompt kept in KV cache) latency_s_per_decision "
                  f"{took:.2f} valid_rate {ok / len(results):.2f} "
                  f"actions {[r.decision().action for r in results]}")
            start = time.perf_counter()
            for m in prompts:
                gw.complete(m, schema=TradeDecision)
            rate = len(prompts) / (time.perf_counter() - start)
            print(f"cached_rerun decisions_per_s {rate:.0f}")
    for words in (("good", "bad"), ("buy", "sell")):
        decider = LogprobDecider(model=model, words=words)
        cal = decider.calibrate()
        start = time.perf_counter()
        right = sum(decider.decide(f).action == label for f, label in _HELD_OUT)
        took = (time.perf_counter() - start) / len(_HELD_OUT)
        print(f"local logprob words {'/'.join(words)} calibration_accuracy {cal.accuracy:.2f} "
              f"(n={cal.n}) held_out_accuracy {right / len(_HELD_OUT):.2f} "
              f"({right}/{len(_HELD_OUT)}) latency_s_per_decision {took:.2f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"local peak_rss_mb {rss:.0f} (model adds about {rss - rss0:.0f})")


def runtimes(*, n: int, threads: int, max_tokens: int = 64) -> None:
    """transformers (no grammar) vs llama.cpp (grammar) through the gateway on the same prompts."""
    from tradesim.llm.local import LocalLlamaProvider, LocalModel
    from tradesim.llm.local_hf import TransformersModel, TransformersProvider

    prompts = [_messages(f) for f, _ in _HELD_OUT[::2][:n]]
    loaders = {"local-transformers": lambda: TransformersProvider(
                   model=TransformersModel(n_threads=threads)),
               "local": lambda: LocalLlamaProvider(model=LocalModel(n_threads=threads))}
    for name, load in loaders.items():
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        provider = load()
        print(f"{name} load_s {time.perf_counter() - start:.1f} peak_rss_added_mb "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0:.0f}")
        with tempfile.TemporaryDirectory() as tmp:
            cfg = GatewayConfig(provider=name, cache_path=str(Path(tmp) / "c.sqlite"),
                                max_tokens=max_tokens)
            with Gateway(config=cfg, provider=provider) as gw:
                start = time.perf_counter()
                results = [gw.complete(m, schema=TradeDecision) for m in prompts]
                took = (time.perf_counter() - start) / len(prompts)
                first = sum(c.error is None for c in gw.journal.records if not c.repaired)
                ok = sum(not r.abstained for r in results)
                print(f"{name} gateway latency_s_per_decision {took:.2f} (incl. repair) "
                      f"valid_first_try {first}/{len(prompts)} valid_after_repair {ok}/"
                      f"{len(prompts)} model_calls {gw.model_calls} "
                      f"actions {[r.decision().action for r in results]}")


def cached_rerun(n: int = 1200, symbols: int = 4) -> None:
    """Decisions/s when every call is a cache hit: one agent-like step = one gather of one call
    per symbol; the peer is the same calls one at a time through the event loop thread."""
    answer = '{"action":"buy","weight":0.5,"confidence":0.6,"rationale":"momentum"}'
    os.environ.setdefault("OPENAI_API_KEY", "sk-benchmark-not-a-real-key")
    prompts = [_messages(f"STOCK_{i % symbols} day {i // symbols}: returns +0.{i % 97:02d}% "
                         f"-0.{(i * 7) % 89:02d}% +1.{i % 13:02d}%") for i in range(n)]
    calls = [{"messages": m, "schema": TradeDecision, "decision_time": "2020-01-02",
              "tag": f"bench:{i % symbols}"} for i, m in enumerate(prompts)]
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(default=Reply(content=answer)) as srv:
        cfg = GatewayConfig(provider="openai", base_url=srv.base_url, concurrency=8,
                            cache_path=str(Path(tmp) / "c.sqlite"))
        with Gateway(config=cfg) as gw:  # record
            for i in range(0, n, 50):
                gw.gather(calls[i:i + 50])
        recorded = len(srv.requests)
        with Gateway(config=cfg) as gw:  # a cached re-run, step by step like LLMAnalyst
            start = time.perf_counter()
            results = [r for i in range(0, n, symbols) for r in gw.gather(calls[i:i + symbols])]
            step_rate = n / (time.perf_counter() - start)
            assert all(r.cache_hit for r in results) and gw.model_calls == 0
        with Gateway(config=cfg) as gw:
            start = time.perf_counter()
            for c in calls:
                gw.complete(**c)
            one_rate = n / (time.perf_counter() - start)
        with Gateway(config=cfg) as gw:  # peer: the earlier path, a loop-thread hop per call
            start = time.perf_counter()
            for c in calls:
                gw._submit(gw._complete(gw._prepare(**c))).result()
            loop_rate = n / (time.perf_counter() - start)
        assert len(srv.requests) == recorded  # nothing re-asked
    print(f"cached_rerun decisions {n} decisions_per_s gather_per_step({symbols}) "
          f"{step_rate:.0f} complete {one_rate:.0f} vs loop_thread_hop_per_call {loop_rate:.0f} "
          f"({step_rate / loop_rate:.1f}x)")


def agent_replay(start: str = "2017-01-01", end: str = "2019-06-30") -> None:
    """A whole LLMAnalyst backtest replayed from its run folder (>= 1,000 cached decisions):
    decisions/s including prompt building and the engine, against the recording run."""
    from tradesim.agents.llm_agent import LLMAnalyst
    from tradesim.data.load import load_market
    from tradesim.evaluate.backtest import BacktestConfig, run_backtest

    def reply(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"].split("oldest first: ")[1].split("\n")[0].split()[-1]
        action = "buy" if float(last) > 0 else "sell"
        return Reply(content=json.dumps({"action": action, "weight": 0.5, "confidence": 0.6,
                                         "rationale": "x"}))

    os.environ.setdefault("OPENAI_API_KEY", "sk-benchmark-not-a-real-key")
    symbols = ("ALPHA", "BRAVO")
    data = load_market(symbols=list(symbols), source="sample")
    config = BacktestConfig.build(agent="llm_analyst", symbols=symbols, start=start, end=end)
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(default=reply) as srv:
        agent = LLMAnalyst(every=1, gateway={"provider": "openai", "base_url": srv.base_url,
                                             "cache_path": str(Path(tmp) / "c.sqlite")})
        t0 = time.perf_counter()
        recorded = run_backtest(config=config, agent=agent, data=data, save_to=Path(tmp) / "run")
        record_s = time.perf_counter() - t0
        agent.close()
        replay = LLMAnalyst.from_run(Path(tmp) / "run")
        t0 = time.perf_counter()
        again = run_backtest(config=config, agent=replay, data=data)
        replay_s = time.perf_counter() - t0
        replay.close()
    n = recorded.meta["llm"]["calls"]
    same = again.equity.equals(recorded.equity)
    print(f"agent_replay decisions {n} decisions_per_s {n / replay_s:.0f} "
          f"(whole backtest incl. engine; recording run {n / record_s:.0f}/s against a local "
          f"server; identical equity {same})")


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
    parser.add_argument("--n", type=int, default=6, help="decision prompts to time (max 10)")
    parser.add_argument("--n-stock", type=int, default=3,
                        help="of those, how many also run the slow stock grammar path")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp CPU threads")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per prompt (best kept)")
    parser.add_argument("--runtimes", action="store_true",
                        help="only compare the transformers and llama.cpp runtimes")
    parser.add_argument("--cached", action="store_true",
                        help="only the cached re-run figure (no local model needed)")
    args = parser.parse_args()
    if args.cached:
        cached_rerun()
        agent_replay()
        raise SystemExit
    if args.runtimes:
        runtimes(n=args.n, threads=args.threads or 1)
        raise SystemExit
    concurrency()
    cached_rerun()
    agent_replay()
    local(n=args.n, n_stock=args.n_stock, threads=args.threads, repeats=args.repeats)
