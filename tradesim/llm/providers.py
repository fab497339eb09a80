"""Chat providers behind the gateway: OpenAI, any OpenAI-compatible server, langchain chat models.

Each provider does one request and nothing else: no retries, no cache, no budget (the gateway
owns those, so every provider gets the same policy). Failures come out as LLMProviderError with
``retryable`` set: 408/409/429/5xx, timeouts and dropped connections can succeed on retry;
400/401/403/404/422 cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from tradesim.errors import LLMProviderError, LLMTimeoutError
from tradesim.llm.budget import count_tokens
from tradesim.llm.journal import Scrubber
from tradesim.llm.schema import response_format

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_HINTS = {401: "check the API key variable", 403: "the key lacks access to this model",
          404: "check the model name and base URL", 400: "the request is malformed for this provider",
          422: "the provider rejected a parameter"}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion request, already anonymised if asked."""

    model: str
    messages: list[dict[str, str]]
    temperature: float
    max_tokens: int
    seed: int | None
    schema: type[BaseModel] | None
    timeout_s: float


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    """The model's text and token counts for one request."""

    content: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@runtime_checkable
class Provider(Protocol):
    """Anything that can answer a :class:`ChatRequest`."""

    name: str

    async def complete(self, request: ChatRequest) -> ChatAnswer: ...


class OpenAIProvider:
    """OpenAI, or any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, LM Studio) by URL."""

    def __init__(self, *, api_key: str, base_url: str | None = None, name: str = "openai") -> None:
        from openai import AsyncOpenAI

        self.name = name
        self.base_url = base_url
        self._scrub = Scrubber([api_key])
        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0)

    async def complete(self, request: ChatRequest) -> ChatAnswer:
        import openai

        kwargs: dict[str, Any] = {"temperature": request.temperature,
                                  "max_tokens": request.max_tokens}
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.schema is not None:
            kwargs["response_format"] = response_format(request.schema)
        failure: LLMProviderError | None = None
        try:
            resp = await self._client.chat.completions.create(
                model=request.model, messages=request.messages,  # type: ignore[arg-type]
                timeout=request.timeout_s, **kwargs)
        except openai.OpenAIError as exc:
            failure = provider_error(exc, provider=self.name, model=request.model,
                                     scrub=self._scrub)
        if failure is not None:  # raised outside the except: the client's error (whose text
            raise failure        # may quote the key) does not travel as its context
        choice = resp.choices[0]
        content = choice.message.content or ""
        usage = resp.usage
        return ChatAnswer(
            content=content,
            prompt_tokens=usage.prompt_tokens if usage else _estimate_prompt(request),
            completion_tokens=usage.completion_tokens if usage else count_tokens(content),
            finish_reason=str(choice.finish_reason or "stop"))


class LangChainProvider:
    """Any langchain chat model; JSON-schema decoding is requested where the model takes it."""

    def __init__(self, *, chat_model: Any, name: str = "langchain") -> None:
        self.name = name
        self._model = chat_model
        self._scrub = Scrubber([k for k in (_secret_of(chat_model),) if k])

    @classmethod
    def openai(cls, *, api_key: str, base_url: str | None = None, model: str,
               timeout_s: float) -> LangChainProvider:
        """langchain-openai's ChatOpenAI, with retries left to the gateway."""
        from langchain_openai import ChatOpenAI

        chat = ChatOpenAI(model=model, api_key=api_key, base_url=base_url, max_retries=0,
                          timeout=timeout_s)
        return cls(chat_model=chat, name="langchain-openai")

    async def complete(self, request: ChatRequest) -> ChatAnswer:
        bind: dict[str, Any] = {"temperature": request.temperature, "max_tokens": request.max_tokens}
        if request.seed is not None:
            bind["seed"] = request.seed
        if request.schema is not None and hasattr(self._model, "openai_api_base"):
            bind["response_format"] = response_format(request.schema)
        failure: LLMProviderError | None = None
        try:
            msg = await self._model.bind(**bind).ainvoke(request.messages)
        except Exception as exc:  # langchain surfaces the underlying client's errors
            failure = provider_error(exc, provider=self.name, model=request.model,
                                     scrub=self._scrub)
        if failure is not None:
            raise failure
        content = msg.content if isinstance(msg.content, str) else str(msg.content)
        usage = getattr(msg, "usage_metadata", None) or {}
        meta = getattr(msg, "response_metadata", None) or {}
        return ChatAnswer(
            content=content,
            prompt_tokens=int(usage.get("input_tokens", _estimate_prompt(request))),
            completion_tokens=int(usage.get("output_tokens", count_tokens(content))),
            finish_reason=str(meta.get("finish_reason") or "stop"))


def provider_error(exc: BaseException, *, provider: str, model: str,
                   scrub: Scrubber | None = None) -> LLMProviderError:
    """Classify a client exception into a retryable or final LLMProviderError.

    The server's error body is quoted only after ``scrub`` (the provider's key and every
    key-shaped string) has run over it: servers echo keys back in 401 bodies.
    """
    import openai

    scrub = scrub or Scrubber()
    where = f"{provider} model {model!r}"
    if isinstance(exc, (openai.APITimeoutError, TimeoutError)):
        return LLMTimeoutError(f"{where}: request timed out", retryable=True)
    if isinstance(exc, (openai.APIConnectionError, ConnectionError)):
        return LLMProviderError(f"{where}: connection failed ({_short(exc, scrub)}); is the "
                                "server up?", retryable=True)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        retryable = status in _RETRYABLE_STATUS or status >= 500
        hint = _HINTS.get(status, "retry later" if retryable else "fix the request")
        return LLMProviderError(f"{where}: HTTP {status} ({_short(exc, scrub)}); {hint}",
                                status=status, retryable=retryable)
    if isinstance(exc, LLMProviderError):
        exc.args = (scrub(str(exc)),)
        return exc
    return LLMProviderError(f"{where}: {type(exc).__name__}: {_short(exc, scrub)}",
                            retryable=False)


def _short(exc: BaseException, scrub: Scrubber) -> str:
    return scrub(str(exc).replace("\n", " "))[:300]


def _secret_of(chat_model: Any) -> str | None:
    """The API key a langchain chat model holds (a pydantic SecretStr), if any."""
    key = getattr(chat_model, "openai_api_key", None) or getattr(chat_model, "api_key", None)
    getter = getattr(key, "get_secret_value", None)
    return getter() if callable(getter) else (key if isinstance(key, str) else None)


def _estimate_prompt(request: ChatRequest) -> int:
    return sum(count_tokens(m["content"]) for m in request.messages)
