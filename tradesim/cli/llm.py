"""``tradesim llm``: known models and prices, a dry-run cost estimate, the bias probe."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tradesim.cli._common import console, user_errors


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
) -> None:
    """Dry-run cost: calls x tokens x price, before a backtest starts."""
    from tradesim.llm.budget import estimate as cost_estimate

    with user_errors():
        typer.echo(str(cost_estimate(model=model, calls=calls, prompt_tokens=prompt_tokens,
                                     completion_tokens=completion_tokens)))


def probe(
    facts: Annotated[str, typer.Argument(help="the decision's facts, e.g. 'AAPL rose 5%...'")],
    provider: Annotated[str | None, typer.Option(
        help="openai | openai-compatible | langchain-openai | local (default: env)")] = None,
    model: Annotated[str | None, typer.Option(help="model name (default: env)")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL")] = None,
    variants: Annotated[int, typer.Option(min=2, max=6, help="paraphrases sent")] = 6,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.0,
    cache: Annotated[str | None, typer.Option(help="SQLite cache file to read/write")] = None,
) -> None:
    """Send paraphrases of one decision; print action distribution and flip rates."""
    from rich.table import Table

    from tradesim.llm.gateway import Gateway, GatewayConfig
    from tradesim.llm.probe import run_probe

    given = {"provider": provider, "model": model, "base_url": base_url, "cache_path": cache}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    shown = console()
    with user_errors(), \
            Gateway(config=GatewayConfig.from_env(temperature=temperature, **overrides)) as gw, \
            shown.status(f"probing {gw.config.model_name} with {variants} paraphrases"):
        result = run_probe(gateway=gw, facts=facts, variants=variants)
    table = Table("variant", "action", title=f"{gw.config.model_name}: {facts}")
    for text, action in zip(result.variants, result.actions, strict=True):
        table.add_row(text.replace("\n", " ")[:90], action)
    shown.print(table)
    dist = ", ".join(f"{a} {p:.0%}" for a, p in result.distribution.items())
    shown.print(f"distribution: {dist}; majority {result.majority}; flip rate "
                f"{result.flip_rate:.0%}; pairwise flip rate {result.pairwise_flip_rate:.0%}; "
                f"abstained {result.abstained}")


def register(app: typer.Typer) -> None:
    """Add the ``llm`` group to ``app``."""
    group = typer.Typer(help="The LLM gateway: models, cost estimates, bias and fragility probe.",
                        no_args_is_help=True)
    group.command("models")(models)
    group.command("estimate")(estimate)
    group.command("probe")(probe)
    app.add_typer(group, name="llm")
