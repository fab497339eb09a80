"""``tradesim llm``: known models and prices, a dry-run cost estimate, the decision-bias audit,
the memorisation probe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tradesim.cli._common import (
    DataOpt,
    EndOpt,
    ParamOpt,
    StartOpt,
    SymbolsOpt,
    console,
    parse_params,
    parse_symbols,
    resolve_data,
    user_errors,
)


def models() -> None:
    """List known models with knowledge cutoffs and prices (USD per 1M tokens)."""
    from rich.table import Table

    from tradesim.llm.budget import PriceTable
    from tradesim.llm.leakage import MODELS

    with user_errors():
        prices = PriceTable()
        table = Table("model", "knowledge cutoff", "source", "$/1M in", "$/1M out")
        for name, info in MODELS.items():
            p_in, p_out = (prices.cost(name, 10**6, 0), prices.cost(name, 0, 10**6))
            table.add_row(name, str(info.cutoff), info.source, f"{p_in:.2f}", f"{p_out:.2f}")
    console().print(table)


def estimate(
    calls: Annotated[int, typer.Option(help="model calls the run would make")],
    model: Annotated[str, typer.Option(help="model name (see tradesim llm models)")]
    = "gpt-4o-mini",
    prompt_tokens: Annotated[int, typer.Option(help="tokens per prompt")] = 1000,
    completion_tokens: Annotated[int, typer.Option(help="tokens per answer")] = 200,
    local: Annotated[bool, typer.Option(help="an in-process model: nothing to pay")] = False,
) -> None:
    """Dry-run cost: calls x tokens x price, before a backtest starts ("price unknown" for a
    hosted model without a price; add one with the gateway's prices setting)."""
    from tradesim.llm.budget import estimate as cost_estimate

    with user_errors():
        typer.echo(str(cost_estimate(model=model, calls=calls, prompt_tokens=prompt_tokens,
                                     completion_tokens=completion_tokens, free=local)))


def _gateway_config(provider: str | None, model: str | None, base_url: str | None,
                    temperature: float, cache: str | None) -> Any:
    from tradesim.llm.gateway import GatewayConfig

    given = {"provider": provider, "model": model, "base_url": base_url, "cache_path": cache}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    return GatewayConfig.from_env(None, temperature=temperature, **overrides)


ProviderOpt = Annotated[str | None, typer.Option(
    help="openai | openai-compatible | langchain-openai | local (default: from the environment)")]
ModelOpt = Annotated[str | None, typer.Option(help="model name (default: from the environment)")]
BaseUrlOpt = Annotated[str | None, typer.Option(help="OpenAI-compatible server URL")]
CacheOpt = Annotated[str | None, typer.Option(help="SQLite cache file to read/write")]


def probe(
    items: Annotated[int, typer.Option(min=1, help="market situations asked about")] = 12,
    samples: Annotated[int, typer.Option(min=1, help="repeated calls per item (varying seed)")]
    = 5,
    seed: Annotated[int, typer.Option(help="seed of the items and the sampling")] = 0,
    provider: ProviderOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.0,
    cache: CacheOpt = None,
    out: Annotated[Path, typer.Option(help="folder for probe.html")] = Path("runs/probe"),
) -> None:
    """Decision-bias audit of a model: option order, label swap, framing, person, the mirror
    test and repeated sampling, each with a confidence interval beside a random answerer."""
    from tradesim.llm.gateway import Gateway
    from tradesim.llm.probe import default_items, run_audit
    from tradesim.report.probe import write_probe_report

    shown = console()
    with user_errors():
        config = _gateway_config(provider, model, base_url, temperature, cache)
        with Gateway(config=config) as gw, \
                shown.status(f"auditing {gw.config.model_name} on {items} items"):
            audit = run_audit(gateway=gw, items=default_items(items, seed=seed),
                              samples=samples, seed=seed)
        page = write_probe_report(out / "probe.html", audit)
    shown.print(str(audit))
    shown.print(f"report: {page}")


def memorisation(
    symbols: SymbolsOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    data: DataOpt = "sample",
    agent: Annotated[str, typer.Option(help="an LLM agent spec")] = "llm_analyst",
    params: ParamOpt = None,
) -> None:
    """Does the model remember the period? The same agent with and without anonymised prompts
    over the same window: agreement of decisions and the return difference, with CIs."""
    from tradesim.agents.registry import load_agent
    from tradesim.engine.backtest import BacktestConfig
    from tradesim.evaluate.backtest import run_backtest
    from tradesim.llm.leakage import memorisation_probe

    with user_errors():
        source, options = resolve_data(data)
        names = parse_symbols(symbols)
        config = BacktestConfig.build(agent=agent, symbols=tuple(names or ()), start=start,
                                      end=end, source=source, source_options=options)
        extra = parse_params(params)

        def backtest(anonymize: bool) -> Any:
            return run_backtest(config=config,
                                agent=load_agent(agent, **{**extra, "anonymize": anonymize}))

        with console().status("running the agent with and without anonymisation"):
            result = memorisation_probe(backtest=backtest)
    console().print(str(result))


def register(app: typer.Typer) -> None:
    """Add the ``llm`` group to ``app``."""
    group = typer.Typer(help="The LLM gateway: models, cost estimates, decision-bias audit, "
                             "memorisation probe.", no_args_is_help=True)
    group.command("models")(models)
    group.command("estimate")(estimate)
    group.command("probe")(probe)
    group.command("memorisation")(memorisation)
    app.add_typer(group, name="llm")
