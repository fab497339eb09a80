"""Gymnasium single env: one book stepped through the engine's compiled bar functions, no torch.

The book is :class:`tradesim.engine.core.OneBook`, stepped by ``step_book``: the sizing,
orders, borrow fee, margin checks, fills and costs the fast path's kernel runs, compiled once.
The reward is a compiled twin of :class:`tradesim.rewards.step.OnlineReward`, and the episode
rules are :class:`TradingEnv`'s for one env (start, length, warm-up, ruin penalty, terminal
flatten cost, truncation); ``tests/test_qtnet_env.py`` holds both equal to the torch env. A step
is two compiled calls on small NumPy arrays (the book's, then reward and observation).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from tradesim.agents.qtnet.env import EnvConfig, EnvData
from tradesim.engine.core import OneBook, step_book
from tradesim.errors import ConfigError
from tradesim.rewards.step import _BOUND, _CAP, _FLOOR, TERMS

try:
    from numba import njit as _njit
except ImportError:  # numba is optional: the same functions run interpreted
    def _njit(**_: Any) -> Any:  # type: ignore[no-redef]
        return lambda fn: fn

# reward spec array: the terms' weights in TERMS order, then their knobs and the env's
_W_LOG, _W_PNL, _W_SHARPE, _W_DOWNSIDE, _W_DRAWDOWN = 0, 1, 2, 3, 4
_W_TURNOVER, _W_COST, _W_CVAR, _W_EXPECTILE = 5, 6, 7, 8
_S_ETA, _S_WARMUP, _S_VAR_FLOOR, _S_CLIP, _S_WINDOW, _S_ALPHA, _S_TAU = 9, 10, 11, 12, 13, 14, 15
_S_RUIN_PENALTY, _S_INITIAL_CASH = 16, 17
# rewards.step's bound and growth-ratio floor/cap: passed in, not read as compiled globals,
# because numba's disk cache would keep stale values after rewards/step.py changed
_S_BOUND, _S_FLOOR, _S_CAP = 18, 19, 20
# reward state array: these scalars, then the last weights [N], then the ring of returns [window]
_R_START, _R_PREV, _R_LEVEL, _R_PEAK, _R_A, _R_B, _R_DD2, _R_MOMENTS, _R_COUNT = range(9)
_R_SIZE = 9


@_njit(cache=True)
def _bounded(x: float, bound: float) -> float:
    """rewards.step._bounded for one number: NaN -> 0, clipped to +-bound."""
    if x != x:
        return 0.0
    return min(max(x, -bound), bound)


@_njit(cache=True)
def _cvar(x: np.ndarray, alpha: float) -> float:
    """rewards.step.cvar of the losses ``-x`` (exact, sorted)."""
    losses = np.sort(-x)
    n = losses.shape[0]
    k = min(max(math.ceil(alpha * n - 1e-9), 1), n)
    nu = losses[k - 1]
    tail = 0.0
    for v in losses:
        tail += max(v - nu, 0.0)
    return nu + tail / ((1.0 - alpha) * n)


@_njit(cache=True)
def _expectile(x: np.ndarray, tau: float) -> float:
    """rewards.step.expectile of ``x``: the candidate of each gap that lies within it."""
    v = np.sort(x)
    n = v.shape[0]
    below = np.zeros(n + 1)
    for k in range(n):
        below[k + 1] = below[k] + v[k]
    best, out = np.inf, 0.0
    for k in range(n + 1):
        cand = (((1 - tau) * below[k] + tau * (below[n] - below[k]))
                / ((1 - tau) * float(k) + tau * float(n - k)))
        lo = -np.inf if k == 0 else v[k - 1]
        hi = np.inf if k == n else v[k]
        miss = max(lo - cand, 0.0) + max(cand - hi, 0.0)
        if miss < best:
            best, out = miss, cand
    return out


@_njit(cache=True)
def _reward(equity: float, costs: float, held: np.ndarray, spec: np.ndarray,
            rs: np.ndarray) -> float:
    """OnlineReward.step for one book: the weighted terms of the bar that ended at ``equity``."""
    n = held.shape[0]
    e = equity if (equity > 0 and equity < np.inf) else 0.0
    prev = rs[_R_PREV]
    ratio = min(max(e / prev, spec[_S_FLOOR]), spec[_S_CAP]) if prev > 0 else 1.0
    bound = spec[_S_BOUND]
    r = ratio - 1.0
    lg = math.log(ratio)
    total = 0.0
    if spec[_W_LOG] > 0:
        total = total + spec[_W_LOG] * lg
    if spec[_W_PNL] > 0:
        start = rs[_R_START]
        total = total + spec[_W_PNL] * _bounded((e - prev) / (start if start > 0 else 1.0), bound)
    if spec[_W_SHARPE] > 0 or spec[_W_DOWNSIDE] > 0:
        a, b, dd2 = rs[_R_A], rs[_R_B], rs[_R_DD2]
        warm = rs[_R_MOMENTS] < spec[_S_WARMUP]
        clip, floor = spec[_S_CLIP], spec[_S_VAR_FLOOR]
        if spec[_W_SHARPE] > 0:
            var = max(b - a * a, floor)
            d = (b * (r - a) - 0.5 * a * (r * r - b)) / var ** 1.5
            total = total + spec[_W_SHARPE] * (0.0 if warm else min(max(d, -clip), clip))
        if spec[_W_DOWNSIDE] > 0:
            d2 = max(dd2, floor)
            dd = math.sqrt(d2)
            d = ((r - 0.5 * a) / dd if r > 0
                 else (d2 * (r - 0.5 * a) - 0.5 * a * r * r) / (d2 * dd))
            total = total + spec[_W_DOWNSIDE] * (0.0 if warm else min(max(d, -clip), clip))
        eta = spec[_S_ETA]
        rs[_R_A] = a + eta * (r - a)
        rs[_R_B] = b + eta * (r * r - b)
        rs[_R_DD2] = dd2 + eta * (min(r, 0.0) ** 2 - dd2)
        rs[_R_MOMENTS] += 1.0
    level = rs[_R_LEVEL] + lg
    peak = max(rs[_R_PEAK], level)
    if spec[_W_DRAWDOWN] > 0:
        grew = (peak - level) - (rs[_R_PEAK] - rs[_R_LEVEL])
        total = total + spec[_W_DRAWDOWN] * -max(grew, 0.0)
    if spec[_W_TURNOVER] > 0:
        turnover = 0.0
        for j in range(n):
            w = _bounded(held[j], bound)
            turnover += abs(w - rs[_R_SIZE + j])
            rs[_R_SIZE + j] = w
        total = total + spec[_W_TURNOVER] * -turnover
    if spec[_W_COST] > 0:
        frac = abs(_bounded(costs, bound)) / prev if prev > 0 else 0.0
        total = total + spec[_W_COST] * -_bounded(frac, bound)
    if spec[_W_CVAR] > 0 or spec[_W_EXPECTILE] > 0:
        window = int(spec[_S_WINDOW])
        ring = rs[_R_SIZE + n:_R_SIZE + n + window]
        ring[int(rs[_R_COUNT]) % window] = _bounded(r, bound)
        rs[_R_COUNT] += 1.0
        full = rs[_R_COUNT] >= window
        if spec[_W_CVAR] > 0:
            total = total + spec[_W_CVAR] * (-max(_cvar(ring, spec[_S_ALPHA]), 0.0) if full
                                              else 0.0)
        if spec[_W_EXPECTILE] > 0:
            total = total + spec[_W_EXPECTILE] * (min(_expectile(ring, spec[_S_TAU]), 0.0)
                                                  if full else 0.0)
    rs[_R_PREV], rs[_R_LEVEL], rs[_R_PEAK] = e, level, peak
    return total


@_njit(cache=True)
def _observe(feats: np.ndarray, row: int, first: int, held: np.ndarray, growth: float,
             obs: np.ndarray) -> None:
    """TradingEnv.observe into ``obs``: feature rows up to ``row`` (not before the series'
    ``first``), the book's weights, log equity growth."""
    n_feats, n = feats.shape[1], held.shape[0]
    at = 0
    for k in range((obs.shape[0] - n - 1) // n_feats - 1, -1, -1):
        r = max(row - k, first)
        for f in range(n_feats):
            obs[at] = feats[r, f]
            at += 1
    for j in range(n):
        obs[at + j] = held[j]
    obs[at + n] = math.log(max(growth, 1e-12))


@_njit(cache=True)
def _after_bar(equity: float, costs: float, flat: float, end: bool, held: np.ndarray,
               spec: np.ndarray, rs: np.ndarray, feats: np.ndarray, row: int, first: int,
               obs: np.ndarray) -> float:
    """The bar's reward (ruin penalty; at the end of data the cost of flattening ``flat``) and
    the next observation written into ``obs``."""
    reward = _reward(equity, costs, held, spec, rs)
    if equity <= 0:
        reward -= spec[_S_RUIN_PENALTY]
    elif end:
        reward -= flat / max(equity, 1e-12)
    _observe(feats, row, first, held, equity / spec[_S_INITIAL_CASH], obs)
    return reward


def _entry(fn: Any, *args: Any) -> Any:
    """``fn`` compiled for the types of ``args`` (loaded from numba's disk cache when there), as
    its entry point: calls skip numba's per-call type dispatch, half the cost of a small call.

    Callers must pass exactly those types; interpreted (no numba, NUMBA_DISABLE_JIT) it is
    ``fn`` itself.
    """
    compile_for = getattr(fn, "compile", None)
    if compile_for is None:
        return fn
    from numba import typeof

    return compile_for(tuple(typeof(a) for a in args))


def _spec(cfg: EnvConfig) -> np.ndarray:
    """The reward spec array (``_W_*``, ``_S_*`` slots) of ``cfg``."""
    r = cfg.reward
    return np.array([float(getattr(r, t)) for t in TERMS]
                    + [r.eta, r.warmup, r.var_floor, r.clip, r.window, r.alpha, r.tau,
                       cfg.ruin_penalty, cfg.initial_cash, _BOUND, _FLOOR, _CAP],
                    dtype=np.float64)


class QTNetGymEnv(gym.Env[np.ndarray, np.ndarray]):
    """One book; ``step`` takes actions in [-1, 1]^N and returns float32 observations.

    ``reset(options=...)`` may fix ``series``, ``start`` and ``end`` (bar indices), as
    ``TradingEnv.reset`` does; otherwise they are drawn from the env's seeded generator.
    ``info`` holds ``equity`` and ``costs`` of the bar, ``ruined`` and ``liquidated``.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # an instance attribute on gym.Env

    def __init__(self, *, data: EnvData, config: EnvConfig | None = None) -> None:
        cfg = (config or EnvConfig()).model_copy(update={"n_envs": 1})
        n_series, n_bars, n, _ = data.prices.shape
        if int(data.lengths.min()) < cfg.warmup + 2:
            raise ConfigError(f"a series has {int(data.lengths.min())} bars but warmup is "
                              f"{cfg.warmup}; load more history or lower warmup")
        self.config, self.data, self.n_assets = cfg, data, n
        px = data.prices.reshape(n_series * n_bars, n, 5)
        ns = data.time.astype("datetime64[ns]").astype(np.int64)
        elapsed = np.diff(ns, axis=1, prepend=ns[:, :1]).reshape(-1)
        self._bars = OneBook.bars(px[..., 0], px[..., 3], px[..., 4], elapsed)
        self._feats = np.ascontiguousarray(data.features.reshape(n_series * n_bars, -1),
                                           dtype=np.float32)
        self._rows = n_bars
        self.book = OneBook(n=n, account=cfg,
                            action_floor=-1.0 if cfg.allow_short else 0.0,
                            action_scale=cfg.max_leverage / n)
        self._spec = _spec(cfg)
        self._rs = np.zeros(_R_SIZE + n + cfg.reward.window)
        self._action = np.zeros(n)
        self.observation_size = cfg.window * self._feats.shape[1] + n + 1
        self._obs = np.zeros(self.observation_size, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(n,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(self.observation_size,),
                                                dtype=np.float32)
        self.np_random = np.random.default_rng(cfg.seed)  # reproducible without reset(seed=)
        self._first = self._t = self._t_end = self._last = 0
        self._done = True
        book = self.book
        self._step_book = _entry(step_book, self._action, 1, self._bars, book.floats, book.ints,
                                 book.config, False)
        self._after_bar = _entry(_after_bar, 1.0, 1.0, 1.0, False, book.weights, self._spec,
                                 self._rs, self._feats, 1, 1, self._obs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: a random series and start bar unless ``options`` name them."""
        super().reset(seed=seed)
        cfg, opts, lengths = self.config, options or {}, self.data.lengths
        series = (int(opts["series"]) if "series" in opts
                  else int(self.np_random.integers(len(lengths))))
        last = int(lengths[series]) - 1
        span = cfg.episode_len
        hi = max(last - span if span is not None else last - 1, cfg.warmup)
        start = (int(opts["start"]) if "start" in opts
                 else cfg.warmup + int(self.np_random.random() * (hi - cfg.warmup + 1)))
        self._t_end = (int(opts["end"]) if "end" in opts
                       else min(start + span, last) if span is not None else last)
        self._first, self._t, self._last = series * self._rows, start, last
        row, n = self._first + start, self.n_assets
        self.book.reset(self._bars[row, n:2 * n])
        self._rs[:] = 0.0
        self._rs[_R_START] = self._rs[_R_PREV] = cfg.initial_cash
        _observe(self._feats, row, self._first, self.book.weights, 1.0, self._obs)
        self._done = False
        return self._obs.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Act on the current observation and advance one bar (NaN in ``action`` holds)."""
        if self._done:
            raise ResetNeeded("the episode has ended; call reset() before step()")
        self._action[:] = action
        t = self._t + 1
        row, end, book = self._first + t, t >= self._last, self.book
        equity, costs, flat, liquidated = self._step_book(self._action, row, self._bars,
                                                          book.floats, book.ints, book.config,
                                                          end)
        reward = self._after_bar(equity, costs, flat, end, book.weights, self._spec, self._rs,
                                 self._feats, row, self._first, self._obs)
        self._t = t
        ruined = equity <= 0
        terminated = ruined or end
        truncated = not terminated and t >= self._t_end
        self._done = terminated or truncated
        return self._obs.copy(), reward, terminated, truncated, {
            "equity": equity, "costs": costs, "ruined": ruined, "liquidated": liquidated}
