"""Where independent runs execute: in this process, in a local process pool, or on Ray.

Every fan-out of the evaluation layer (the leaderboard's agent x seed x window runs and look-ahead
checks, parameter sweeps, QTNet training seeds) is a list of tasks, each a picklable top-level
function with plain arguments that carry their own seed, handed to one :class:`Executor`. Results
come back in task order and nothing depends on scheduling, so every executor reproduces the
sequential run exactly. Large inputs (a ``MarketData``) travel once per worker through
:meth:`Executor.put`, not once per task.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

from tradesim.errors import ConfigError

R = TypeVar("R")

EXECUTOR_SPECS: tuple[str, ...] = ("local", "local:N", "sequential", "ray", "ray:auto",
                                   "ray://HOST:PORT")
EXECUTOR_HELP = ("where independent runs execute: local (a process pool, one worker per core, "
                 "at most 8) | local:N (N workers) | sequential (this process) | ray (a local "
                 "Ray instance) | ray:auto (the Ray cluster this machine joined) | "
                 "ray://HOST:PORT (a Ray cluster's client address); Ray needs "
                 "pip install 'tradesim[ray]'")
RAY_INSTALL_HINT = "pip install 'tradesim[ray]'"
RUNTIME_ENV_VAR = "TRADESIM_RAY_RUNTIME_ENV"
_MAX_LOCAL_WORKERS = 8  # beyond this a 1-core-per-run pool mostly adds memory, not speed


@dataclass(frozen=True)
class Shared:
    """A handle to an object put once by an executor; task functions receive the object itself.

    ``kind`` is ``value`` (held here), ``file`` (a pickle a local worker reads once) or ``ray``
    (an object in Ray's store); ``market`` marks a ``MarketData`` shipped as plain arrays.
    """

    token: str
    kind: str
    where: Any
    market: bool = False


@runtime_checkable
class Executor(Protocol):
    """Runs ``fn(*task)`` for every task and returns the results in task order."""

    name: str
    workers: int

    def put(self, obj: Any) -> Any:
        """A handle for a large task argument, shipped to each worker at most once."""
        ...

    def map(self, fn: Callable[..., R], tasks: Iterable[Sequence[Any]], *,
            on_result: Callable[[int, R], None] | None = None) -> list[R]:
        """``[fn(*t) for t in tasks]``; ``on_result(i, result)`` runs here as each arrives."""
        ...

    def close(self) -> None:
        """Release workers (and a Ray instance this executor started)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class _Base:
    """Context management shared by the executors."""

    name = "base"
    workers = 1

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers})"


class SequentialExecutor(_Base):
    """Every task in this process, one after another: the reference every executor matches."""

    name = "sequential"

    def put(self, obj: Any) -> Any:
        """The object itself (nothing travels)."""
        return obj

    def map(self, fn: Callable[..., R], tasks: Iterable[Sequence[Any]], *,
            on_result: Callable[[int, R], None] | None = None) -> list[R]:
        """Run the tasks in order, here."""
        out: list[R] = []
        for i, task in enumerate(tasks):
            out.append(_call(fn, tuple(task)))
            if on_result is not None:
                on_result(i, out[-1])
        return out


class LocalExecutor(_Base):
    """A pool of fresh (spawned) worker processes on this machine, started on first use.

    A map of one task (or a pool of one worker) runs here instead: a worker would only add
    its start-up (importing pandas and scipy takes seconds) to the same result.
    """

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"local executor with {workers} workers; use at least 1")
        self.workers = workers or default_workers()
        self._pool: Any = None
        self._dir: Path | None = None

    def put(self, obj: Any) -> Shared:
        """Pickle ``obj`` once into a private folder; each worker reads it once and keeps it."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="tradesim-executor-"))
        token = uuid.uuid4().hex
        market, payload = _portable(obj)
        path = self._dir / f"{token}.pkl"
        with path.open("wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        return Shared(token=token, kind="file", where=str(path), market=market)

    def map(self, fn: Callable[..., R], tasks: Iterable[Sequence[Any]], *,
            on_result: Callable[[int, R], None] | None = None) -> list[R]:
        """Submit every task; collect in task order, reporting each as it completes."""
        from concurrent.futures import FIRST_COMPLETED, wait

        jobs = [tuple(t) for t in tasks]
        if len(jobs) <= 1 or self.workers == 1:  # nothing to overlap: skip the worker start
            return SequentialExecutor().map(fn, jobs, on_result=on_result)
        pool = self._ensure_pool()
        futures = {pool.submit(_call, fn, job): i for i, job in enumerate(jobs)}
        out: list[Any] = [None] * len(jobs)
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=futures.__getitem__):
                    i = futures[fut]
                    out[i] = fut.result()
                    if on_result is not None:
                        on_result(i, out[i])
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        return out

    def close(self) -> None:
        """Stop the workers and delete the shared pickles."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _ensure_pool(self) -> Any:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:  # spawn: workers start clean (no forked threads, locks or data)
            self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                             mp_context=mp.get_context("spawn"))
        return self._pool


class RayExecutor(_Base):
    """Tasks as Ray tasks (one CPU each): a local instance, or a cluster by ``address``.

    ``address`` None starts (or reuses) a Ray instance on this machine with ``num_cpus``;
    ``"auto"`` joins the cluster this machine is part of; ``"ray://HOST:PORT"`` connects as a
    client. The package and the data must be importable and readable on every worker
    (``runtime_env`` is passed to ``ray.init``; see ``docs/scale-out.md``).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 runtime_env: dict[str, Any] | None = None) -> None:
        spec = "ray" if address is None else (
            address if address.startswith("ray://") else f"ray:{address}")
        ray = import_ray(spec)
        self.address = address
        self._started = False
        if not ray.is_initialized():
            import logging

            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": logging.WARNING}
            if runtime_env:
                kwargs["runtime_env"] = runtime_env
            if address is None and not os.environ.get("RAY_ADDRESS"):
                kwargs["num_cpus"] = num_cpus or default_workers()
            elif address is not None:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ConfigError(f"--executor {spec}: cannot reach the Ray cluster ({exc}); "
                                  "start it with "
                                  "`ray start --head` and pass its client address "
                                  "ray://HEAD:10001") from None
            self._started = True
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_call)

    def put(self, obj: Any) -> Shared:
        """``ray.put`` once; tasks hold the reference and each worker process rebuilds it once."""
        import ray

        market, payload = _portable(obj)
        return Shared(token=uuid.uuid4().hex, kind="ray", where=ray.put(payload), market=market)

    def map(self, fn: Callable[..., R], tasks: Iterable[Sequence[Any]], *,
            on_result: Callable[[int, R], None] | None = None) -> list[R]:
        """Submit every task; collect in task order, reporting each as it completes."""
        import ray

        refs = {self._remote.remote(fn, tuple(t)): i for i, t in enumerate(tasks)}
        out: list[Any] = [None] * len(refs)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = refs[ref]
                    out[i] = ray.get(ref)
                    if on_result is not None:
                        on_result(i, out[i])
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
        return out

    def close(self) -> None:
        """Shut Ray down if this executor started it (a reused instance stays up)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def make_executor(spec: str | None = None) -> Executor:
    """The executor a spec names (see :data:`EXECUTOR_HELP`); None is ``local``."""
    kind, arg = check_executor(spec)
    if kind == "sequential":
        return SequentialExecutor()
    if kind == "local":
        return LocalExecutor(arg)
    return RayExecutor(arg, runtime_env=_runtime_env())


def check_executor(spec: str | None) -> tuple[str, Any]:
    """(kind, argument) of an executor spec, refused with the accepted forms before anything
    starts; a Ray spec without Ray installed names the extra that installs it."""
    text = (spec or "local").strip()
    if text in ("sequential", "local"):
        return text, None
    if text.startswith("local:"):
        n = text.removeprefix("local:")
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(f"--executor {text!r}: local:N needs a worker count N >= 1, "
                              "e.g. local:4")
        return "local", int(n)
    if text == "ray" or text.startswith("ray:"):
        address = None if text == "ray" else text.removeprefix("ray:")
        if address is not None and address.startswith("//"):
            address = "ray:" + address
            if len(address) <= len("ray://"):
                raise ConfigError(f"--executor {text!r}: name the head, e.g. "
                                  "ray://HEAD:10001")
        if not address and address is not None:
            raise ConfigError(f"--executor {text!r}: use ray, ray:auto or ray://HOST:PORT")
        import_ray(text, load=False)
        return "ray", address
    raise ConfigError(f"--executor {text!r} is not an executor; use one of "
                      f"{', '.join(EXECUTOR_SPECS)}")


@contextmanager
def using(executor: Executor | str | None) -> Iterator[Executor]:
    """``executor`` as an open executor: one named by a spec is closed on exit, one passed in
    stays open for its owner."""
    if executor is None or isinstance(executor, str):
        with make_executor(executor) as ex:
            yield ex
    else:
        yield executor


def default_workers() -> int:
    """The cores this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    return max(1, min(n, _MAX_LOCAL_WORKERS))


def import_ray(spec: str = "ray", *, load: bool = True) -> Any:
    """The ``ray`` module (without ``load``: only whether it is installed), or a ConfigError
    naming the extra that installs it."""
    import importlib.util

    try:
        if not load:
            if importlib.util.find_spec("ray") is None:
                raise ImportError("ray")
            return None
        import ray
    except (ImportError, ValueError):  # ValueError: a ray module entry set to None
        raise ConfigError(f"--executor {spec} needs Ray, which is not installed; "
                          f"{RAY_INSTALL_HINT} (or use --executor local)") from None
    return ray


def _runtime_env() -> dict[str, Any] | None:
    """Ray's runtime_env from ``TRADESIM_RAY_RUNTIME_ENV`` (JSON), e.g. a working_dir or pip."""
    text = os.environ.get(RUNTIME_ENV_VAR)
    if not text:
        return None
    try:
        env = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{RUNTIME_ENV_VAR} is not JSON ({exc.msg}); e.g. "
                          '\'{"working_dir": "."}\'') from None
    if not isinstance(env, dict):
        raise ConfigError(f"{RUNTIME_ENV_VAR} must be a JSON object, e.g. {{\"pip\": "
                          "[\"tradesim\"]}")
    return env


# --- what runs in the worker --------------------------------------------------------------------

_CACHE: OrderedDict[str, Any] = OrderedDict()  # per worker process: token -> rebuilt object
_CACHE_SIZE = 4


def _call(fn: Callable[..., R], args: tuple[Any, ...]) -> R:
    """``fn(*args)`` with every :class:`Shared` argument replaced by its object."""
    return fn(*(_resolve(a) if isinstance(a, Shared) else a for a in args))


def _resolve(handle: Shared) -> Any:
    """The object behind ``handle``, loaded (and a market rebuilt) once per worker process."""
    if handle.token in _CACHE:
        _CACHE.move_to_end(handle.token)
        return _CACHE[handle.token]
    if handle.kind == "file":
        with open(handle.where, "rb") as f:
            payload = pickle.load(f)
    elif handle.kind == "ray":
        import ray

        payload = ray.get(handle.where)
    else:
        payload = handle.where
    if handle.market:
        from tradesim.evaluate.lookahead import _rebuild

        obj = _rebuild(payload)  # sealed again: pickled arrays arrive writeable
    else:
        obj = payload
    _CACHE[handle.token] = obj
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return obj


def _portable(obj: Any) -> tuple[bool, Any]:
    """(is a market, what to ship): a ``MarketData`` travels as plain arrays and news."""
    from tradesim.data.view import MarketData

    if isinstance(obj, MarketData):
        from tradesim.evaluate.lookahead import _payload

        return True, _payload(obj)
    return False, obj


__all__ = ["EXECUTOR_HELP", "EXECUTOR_SPECS", "Executor", "LocalExecutor", "RayExecutor",
           "SequentialExecutor", "Shared", "check_executor", "default_workers", "make_executor",
           "using"]
