"""Per-step rewards from ledger series, as pure NumPy functions and batched torch twins.

Shapes (time on the last axis, any leading batch axes such as ``n_envs``):
``equity [..., T+1]`` (the starting equity first) gives rewards ``[..., T]``, one per bar;
``weights [..., T+1, N]`` are the book's weights at the same stamps; ``costs [..., T]`` the costs
charged in each bar. Every reward is finite for any input: a non-finite, zero or negative equity
counts as ruin (log growth ``log(1e-12)`` once, then nothing: a reset after ruin earns no reward).
Rewards depend on returns only, so scaling the account by ``k`` leaves them unchanged.

The torch forms (``*_torch``) take tensors on the caller's device and never sync with the host;
:class:`OnlineReward` is the stateful per-step form for a vectorised RL environment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field

from tradesim.errors import ConfigError

if TYPE_CHECKING:
    import torch

_FLOOR = 1e-12  # smallest growth ratio: ruin costs log(1e-12) ~ -27.6 once
_CAP = 1e6  # largest growth ratio per bar: keeps squares finite in float32
_BOUND = 1e6  # magnitude bound on weights, costs and P&L ratios

_T = TypeVar("_T")


class RewardSpec(BaseModel):
    """Weights of each per-step term (all >= 0; penalties are already signed) and their knobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    log_growth: float = Field(1.0, ge=0)
    pnl: float = Field(0.0, ge=0)
    sharpe: float = Field(0.0, ge=0)  # differential Sharpe ratio
    downside: float = Field(0.0, ge=0)  # differential downside deviation ratio
    drawdown: float = Field(0.0, ge=0)
    turnover: float = Field(0.0, ge=0)
    cost: float = Field(0.0, ge=0)
    cvar: float = Field(0.0, ge=0)
    expectile: float = Field(0.0, ge=0)
    eta: float = Field(0.01, gt=0, lt=1)  # adaptation rate of the moving moments
    warmup: int = Field(20, ge=0)  # bars of zero differential-ratio reward while moments settle
    var_floor: float = Field(1e-10, gt=0)
    clip: float = Field(5.0, gt=0)  # bound on the differential ratios
    window: int = Field(60, ge=2)  # rolling window of the tail terms
    alpha: float = Field(0.95, gt=0, lt=1)  # CVaR level
    tau: float = Field(0.1, gt=0, lt=1)  # expectile level (small = lower tail)


TERMS: tuple[str, ...] = ("log_growth", "pnl", "sharpe", "downside", "drawdown", "turnover",
                          "cost", "cvar", "expectile")


# --- NumPy forms ---------------------------------------------------------------------------

def _clean(equity: np.ndarray) -> np.ndarray:
    """Equity with every non-finite or non-positive value set to 0 (ruin)."""
    e = np.asarray(equity, dtype=np.float64)
    return np.where(np.isfinite(e) & (e > 0), e, 0.0)


def _ratio(equity: np.ndarray) -> np.ndarray:
    """Guarded growth ratio per bar: ruin -> floor, after ruin -> 1, capped above."""
    e = _clean(equity)
    prev, cur = e[..., :-1], e[..., 1:]
    alive = prev > 0
    with np.errstate(over="ignore"):
        r = np.divide(cur, prev, out=np.ones_like(cur), where=alive)
    return np.where(alive, np.clip(r, _FLOOR, _CAP), 1.0)


def _bounded(x: np.ndarray, bound: float = _BOUND) -> np.ndarray:
    return np.clip(np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=bound,
                                 neginf=-bound), -bound, bound)


def _shift(x: np.ndarray) -> np.ndarray:
    """Previous value along time, 0 before the first bar."""
    return np.concatenate([np.zeros_like(x[..., :1]), x[..., :-1]], axis=-1)


def _ema(x: np.ndarray, eta: float) -> np.ndarray:
    """Moody-Saffell moving moment ``m_t = m_{t-1} + eta (x_t - m_{t-1})`` from ``m_{-1} = 0``."""
    from scipy.signal import lfilter  # lazy: scipy.signal costs seconds of import time

    return lfilter([eta], [1.0, eta - 1.0], x, axis=-1)


def simple_returns(equity: np.ndarray) -> np.ndarray:
    """Guarded simple return per bar (ruin gives ~-1, a ruined book 0)."""
    return _ratio(equity) - 1.0


def log_growth(equity: np.ndarray) -> np.ndarray:
    """Log growth of equity per bar; ``exp(sum)`` is the equity ratio while the book lives."""
    return np.log(_ratio(equity))


def log_growth_step(before: float, after: float) -> float:
    """Scalar :func:`log_growth` of one bar, for the engine's step loop (same guards)."""
    if not (before > 0 and math.isfinite(before)):
        return 0.0  # the book was already gone
    ratio = after / before if (after > 0 and math.isfinite(after)) else 0.0
    return math.log(min(max(ratio, _FLOOR), _CAP))


def pnl_reward(equity: np.ndarray) -> np.ndarray:
    """Equity change per bar over the starting equity; sums to the run's P&L / start equity."""
    e = _clean(equity)
    start = e[..., :1]
    scale = np.where(start > 0, start, 1.0)
    with np.errstate(over="ignore"):
        return _bounded(np.diff(e, axis=-1) / scale)


def differential_sharpe(returns: np.ndarray, *, eta: float = 0.01, warmup: int = 20,
                        var_floor: float = 1e-10, clip: float = 5.0) -> np.ndarray:
    """Moody-Saffell differential Sharpe ratio per bar (0 during warm-up, clipped to +-clip)."""
    r = _bounded(returns)
    a_prev, b_prev = _shift(_ema(r, eta)), _shift(_ema(r * r, eta))
    var = np.maximum(b_prev - a_prev * a_prev, var_floor)
    d = (b_prev * (r - a_prev) - 0.5 * a_prev * (r * r - b_prev)) / var ** 1.5
    return _warm(np.clip(d, -clip, clip), warmup)


def differential_downside(returns: np.ndarray, *, eta: float = 0.01, warmup: int = 20,
                          var_floor: float = 1e-10, clip: float = 5.0) -> np.ndarray:
    """Moody-Saffell (2001) differential downside deviation ratio per bar (DDR)."""
    r = _bounded(returns)
    a_prev = _shift(_ema(r, eta))
    dd2 = np.maximum(_shift(_ema(np.minimum(r, 0.0) ** 2, eta)), var_floor)
    dd = np.sqrt(dd2)
    up = (r - 0.5 * a_prev) / dd
    down = (dd2 * (r - 0.5 * a_prev) - 0.5 * a_prev * r * r) / (dd2 * dd)
    return _warm(np.clip(np.where(r > 0, up, down), -clip, clip), warmup)


def _warm(d: np.ndarray, warmup: int) -> np.ndarray:
    d = d.copy()
    d[..., :warmup] = 0.0
    return d


def drawdown_increment(equity: np.ndarray) -> np.ndarray:
    """Minus the increase of the log drawdown in each bar (0 when the drawdown does not grow)."""
    lg = log_growth(equity)
    level = np.concatenate([np.zeros_like(lg[..., :1]), np.cumsum(lg, axis=-1)], axis=-1)
    dd = np.maximum.accumulate(level, axis=-1) - level
    return -np.maximum(np.diff(dd, axis=-1), 0.0)


def turnover_penalty(weights: np.ndarray) -> np.ndarray:
    """Minus the two-sided turnover ``sum_i |w_t,i - w_t-1,i|`` per bar."""
    w = _bounded(weights)
    return -np.abs(np.diff(w, axis=-2)).sum(axis=-1)


def cost_penalty(costs: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """Minus the costs of each bar as a fraction of the equity before it (never positive)."""
    prev = _clean(equity)[..., :-1]
    c = np.abs(_bounded(costs))
    with np.errstate(over="ignore"):
        return -_bounded(np.divide(c, prev, out=np.zeros_like(prev), where=prev > 0))


def cvar(returns: np.ndarray, *, alpha: float = 0.95) -> np.ndarray:
    """Rockafellar-Uryasev CVaR of the losses ``-returns`` over the last axis (exact, sorted)."""
    losses = np.sort(-_bounded(returns), axis=-1)
    n = losses.shape[-1]
    k = min(max(math.ceil(alpha * n - 1e-9), 1), n)  # nu* = the k-th smallest loss
    nu = losses[..., k - 1:k]
    return nu[..., 0] + np.maximum(losses - nu, 0.0).sum(axis=-1) / ((1.0 - alpha) * n)


def expectile(x: np.ndarray, *, tau: float = 0.1) -> np.ndarray:
    """The tau-expectile over the last axis, exactly: solved on each gap of the sorted values."""
    v = np.sort(_bounded(x), axis=-1)
    n = v.shape[-1]
    below = np.concatenate([np.zeros_like(v[..., :1]), np.cumsum(v, axis=-1)], axis=-1)
    k = np.arange(n + 1)
    cand = (((1 - tau) * below + tau * (below[..., -1:] - below))
            / ((1 - tau) * k + tau * (n - k)))
    lo = np.concatenate([np.full_like(v[..., :1], -np.inf), v], axis=-1)
    hi = np.concatenate([v, np.full_like(v[..., :1], np.inf)], axis=-1)
    miss = np.maximum(lo - cand, 0.0) + np.maximum(cand - hi, 0.0)
    return np.take_along_axis(cand, np.argmin(miss, axis=-1)[..., None], axis=-1)[..., 0]


def rolling_cvar_penalty(returns: np.ndarray, *, window: int = 60,
                         alpha: float = 0.95) -> np.ndarray:
    """Minus the positive part of CVaR over the trailing ``window`` bars (0 until it is full)."""
    return _rolling(returns, window, lambda w: -np.maximum(cvar(w, alpha=alpha), 0.0))


def rolling_expectile_penalty(returns: np.ndarray, *, window: int = 60,
                              tau: float = 0.1) -> np.ndarray:
    """The negative part of the trailing tau-expectile of returns (0 until the window is full)."""
    return _rolling(returns, window, lambda w: np.minimum(expectile(w, tau=tau), 0.0))


def _rolling(returns: np.ndarray, window: int,
             fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    r = _bounded(returns)
    out = np.zeros_like(r)
    if r.shape[-1] >= window:
        out[..., window - 1:] = fn(sliding_window_view(r, window, axis=-1))
    return out


def reward_terms(*, equity: np.ndarray, weights: np.ndarray | None = None,
                 costs: np.ndarray | None = None,
                 spec: RewardSpec | None = None) -> dict[str, np.ndarray]:
    """Each term with a non-zero weight in ``spec``, plus their weighted ``total``."""
    spec = spec or RewardSpec()
    _need(spec, weights, costs)
    r = simple_returns(equity)
    fns = {
        "log_growth": lambda: log_growth(equity),
        "pnl": lambda: pnl_reward(equity),
        "sharpe": lambda: differential_sharpe(r, eta=spec.eta, warmup=spec.warmup,
                                              var_floor=spec.var_floor, clip=spec.clip),
        "downside": lambda: differential_downside(r, eta=spec.eta, warmup=spec.warmup,
                                                  var_floor=spec.var_floor, clip=spec.clip),
        "drawdown": lambda: drawdown_increment(equity),
        "turnover": lambda: turnover_penalty(_given(weights)),
        "cost": lambda: cost_penalty(_given(costs), equity),
        "cvar": lambda: rolling_cvar_penalty(r, window=spec.window, alpha=spec.alpha),
        "expectile": lambda: rolling_expectile_penalty(r, window=spec.window, tau=spec.tau),
    }
    out = {name: fns[name]() for name in TERMS if getattr(spec, name) > 0}
    total = np.zeros_like(r)
    for name, values in out.items():
        total = total + getattr(spec, name) * values
    out["total"] = total
    return out


def _need(spec: RewardSpec, weights: object, costs: object) -> None:
    if spec.turnover > 0 and weights is None:
        raise ConfigError("RewardSpec.turnover > 0 needs weights [..., T+1, N]; pass weights= "
                          "or set turnover = 0")
    if spec.cost > 0 and costs is None:
        raise ConfigError("RewardSpec.cost > 0 needs costs [..., T]; pass costs= or set cost = 0")


def _given(value: _T | None) -> _T:
    """``value``, which :func:`_need` has already checked is present for the term that uses it."""
    assert value is not None
    return value


# --- torch forms ---------------------------------------------------------------------------

def _clean_t(equity: torch.Tensor) -> torch.Tensor:
    import torch
    return torch.where(torch.isfinite(equity) & (equity > 0), equity, torch.zeros_like(equity))


def _step_ratio_t(prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    """Guarded growth ratio from cleaned previous and current equity."""
    import torch
    alive = prev > 0
    r = cur / torch.where(alive, prev, torch.ones_like(prev))
    return torch.where(alive, r.clamp(_FLOOR, _CAP), torch.ones_like(r))


def _bounded_t(x: torch.Tensor, bound: float = _BOUND) -> torch.Tensor:
    import torch
    return torch.nan_to_num(x, nan=0.0, posinf=bound, neginf=-bound).clamp(-bound, bound)


def simple_returns_torch(equity: torch.Tensor) -> torch.Tensor:
    """Torch form of :func:`simple_returns`."""
    e = _clean_t(equity)
    return _step_ratio_t(e[..., :-1], e[..., 1:]) - 1.0


def log_growth_torch(equity: torch.Tensor) -> torch.Tensor:
    """Torch form of :func:`log_growth`."""
    e = _clean_t(equity)
    return _step_ratio_t(e[..., :-1], e[..., 1:]).log()


def pnl_reward_torch(equity: torch.Tensor) -> torch.Tensor:
    """Torch form of :func:`pnl_reward`."""
    import torch
    e = _clean_t(equity)
    start = e[..., :1]
    return _bounded_t(torch.diff(e, dim=-1) / torch.where(start > 0, start, torch.ones_like(start)))


def drawdown_increment_torch(equity: torch.Tensor) -> torch.Tensor:
    """Torch form of :func:`drawdown_increment`."""
    import torch
    lg = log_growth_torch(equity)
    level = torch.cat([torch.zeros_like(lg[..., :1]), lg.cumsum(-1)], dim=-1)
    dd = torch.cummax(level, dim=-1).values - level
    return -torch.diff(dd, dim=-1).clamp_min(0.0)


def turnover_penalty_torch(weights: torch.Tensor) -> torch.Tensor:
    """Torch form of :func:`turnover_penalty`."""
    import torch
    return -torch.diff(_bounded_t(weights), dim=-2).abs().sum(-1)


def cost_penalty_torch(costs: torch.Tensor, equity: torch.Tensor) -> torch.Tensor:
    """Torch form of :func:`cost_penalty`."""
    import torch
    prev = _clean_t(equity)[..., :-1]
    c = _bounded_t(costs).abs()
    frac = c / torch.where(prev > 0, prev, torch.ones_like(prev))
    return -_bounded_t(torch.where(prev > 0, frac, torch.zeros_like(frac)))


def cvar_torch(returns: torch.Tensor, *, alpha: float = 0.95) -> torch.Tensor:
    """Torch form of :func:`cvar`."""
    losses = (-_bounded_t(returns)).sort(dim=-1).values
    n = losses.shape[-1]
    k = min(max(math.ceil(alpha * n - 1e-9), 1), n)
    nu = losses[..., k - 1:k]
    return nu[..., 0] + (losses - nu).clamp_min(0.0).sum(-1) / ((1.0 - alpha) * n)


def expectile_torch(x: torch.Tensor, *, tau: float = 0.1) -> torch.Tensor:
    """Torch form of :func:`expectile`."""
    import torch
    v = _bounded_t(x).sort(dim=-1).values
    n = v.shape[-1]
    below = torch.cat([torch.zeros_like(v[..., :1]), v.cumsum(-1)], dim=-1)
    k = torch.arange(n + 1, device=v.device, dtype=v.dtype)
    cand = (((1 - tau) * below + tau * (below[..., -1:] - below))
            / ((1 - tau) * k + tau * (n - k)))
    lo = torch.cat([torch.full_like(v[..., :1], -torch.inf), v], dim=-1)
    hi = torch.cat([v, torch.full_like(v[..., :1], torch.inf)], dim=-1)
    miss = (lo - cand).clamp_min(0.0) + (cand - hi).clamp_min(0.0)
    return cand.gather(-1, miss.argmin(-1, keepdim=True))[..., 0]


def rolling_cvar_penalty_torch(returns: torch.Tensor, *, window: int = 60,
                               alpha: float = 0.95) -> torch.Tensor:
    """Torch form of :func:`rolling_cvar_penalty`."""
    return _rolling_t(returns, window, lambda w: -cvar_torch(w, alpha=alpha).clamp_min(0.0))


def rolling_expectile_penalty_torch(returns: torch.Tensor, *, window: int = 60,
                                    tau: float = 0.1) -> torch.Tensor:
    """Torch form of :func:`rolling_expectile_penalty`."""
    return _rolling_t(returns, window, lambda w: expectile_torch(w, tau=tau).clamp_max(0.0))


def _rolling_t(returns: torch.Tensor, window: int,
               fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    import torch
    r = _bounded_t(returns)
    out = torch.zeros_like(r)
    if r.shape[-1] >= window:
        out[..., window - 1:] = fn(r.unfold(-1, window, 1))
    return out


def _differential_t(returns: torch.Tensor, spec: RewardSpec, *, downside: bool) -> torch.Tensor:
    """Offline torch differential ratio: the online recursion run over the time axis."""
    import torch
    r = _bounded_t(returns)
    state = _Moments.zeros(r.shape[:-1], r)
    out = torch.empty_like(r)
    for t in range(r.shape[-1]):
        out[..., t] = state.ratio(r[..., t], spec, downside=downside)
        state.update(r[..., t], spec)
    return out


def differential_sharpe_torch(returns: torch.Tensor, *, eta: float = 0.01, warmup: int = 20,
                              var_floor: float = 1e-10, clip: float = 5.0) -> torch.Tensor:
    """Torch form of :func:`differential_sharpe` (a loop over time; no host sync)."""
    spec = RewardSpec(eta=eta, warmup=warmup, var_floor=var_floor, clip=clip)
    return _differential_t(returns, spec, downside=False)


def differential_downside_torch(returns: torch.Tensor, *, eta: float = 0.01, warmup: int = 20,
                                var_floor: float = 1e-10, clip: float = 5.0) -> torch.Tensor:
    """Torch form of :func:`differential_downside` (a loop over time; no host sync)."""
    spec = RewardSpec(eta=eta, warmup=warmup, var_floor=var_floor, clip=clip)
    return _differential_t(returns, spec, downside=True)


class _Moments:
    """Moving first moment, second moment and downside second moment, plus the bar count."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, dd2: torch.Tensor,
                 n: torch.Tensor) -> None:
        self.a, self.b, self.dd2, self.n = a, b, dd2, n

    @classmethod
    def zeros(cls, shape: tuple[int, ...], like: torch.Tensor) -> _Moments:
        import torch
        z = torch.zeros(shape, dtype=like.dtype, device=like.device)
        return cls(z, z.clone(), z.clone(), torch.zeros(shape, dtype=torch.long, device=like.device))

    def ratio(self, r: torch.Tensor, spec: RewardSpec, *, downside: bool) -> torch.Tensor:
        """Differential ratio of return ``r`` from the current moments (0 during warm-up)."""
        import torch
        a, b, dd2 = self.a, self.b, self.dd2
        if downside:
            d2 = dd2.clamp_min(spec.var_floor)
            dd = d2.sqrt()
            d = torch.where(r > 0, (r - 0.5 * a) / dd,
                            (d2 * (r - 0.5 * a) - 0.5 * a * r * r) / (d2 * dd))
        else:
            var = (b - a * a).clamp_min(spec.var_floor)
            d = (b * (r - a) - 0.5 * a * (r * r - b)) / var ** 1.5
        return torch.where(self.n < spec.warmup, torch.zeros_like(d), d.clamp(-spec.clip, spec.clip))

    def update(self, r: torch.Tensor, spec: RewardSpec) -> None:
        """Fold return ``r`` into the moving moments."""
        a, b, dd2 = self.a, self.b, self.dd2
        self.a = a + spec.eta * (r - a)
        self.b = b + spec.eta * (r * r - b)
        self.dd2 = dd2 + spec.eta * (r.clamp_max(0.0) ** 2 - dd2)
        self.n = self.n + 1

    def reset(self, mask: torch.Tensor) -> None:
        import torch
        self.a = torch.where(mask, torch.zeros_like(self.a), self.a)
        self.b = torch.where(mask, torch.zeros_like(self.b), self.b)
        self.dd2 = torch.where(mask, torch.zeros_like(self.dd2), self.dd2)
        self.n = torch.where(mask, torch.zeros_like(self.n), self.n)


def reward_terms_torch(*, equity: torch.Tensor, weights: torch.Tensor | None = None,
                       costs: torch.Tensor | None = None,
                       spec: RewardSpec | None = None) -> dict[str, torch.Tensor]:
    """Torch form of :func:`reward_terms` over ``[..., T+1]`` equity tensors."""
    import torch
    spec = spec or RewardSpec()
    _need(spec, weights, costs)
    r = simple_returns_torch(equity)
    fns = {
        "log_growth": lambda: log_growth_torch(equity),
        "pnl": lambda: pnl_reward_torch(equity),
        "sharpe": lambda: _differential_t(r, spec, downside=False),
        "downside": lambda: _differential_t(r, spec, downside=True),
        "drawdown": lambda: drawdown_increment_torch(equity),
        "turnover": lambda: turnover_penalty_torch(_given(weights)),
        "cost": lambda: cost_penalty_torch(_given(costs), equity),
        "cvar": lambda: rolling_cvar_penalty_torch(r, window=spec.window, alpha=spec.alpha),
        "expectile": lambda: rolling_expectile_penalty_torch(r, window=spec.window, tau=spec.tau),
    }
    out = {name: fns[name]() for name in TERMS if getattr(spec, name) > 0}
    total = torch.zeros_like(r)
    for name, values in out.items():
        total = total + getattr(spec, name) * values
    out["total"] = total
    return out


class OnlineReward:
    """Stateful per-step reward for ``n_envs`` parallel books on one device (the DRL env's form).

    ``reset`` with the starting equity (and weights), then call ``step`` once per bar with the
    equity after the bar, the weights at its end and its costs; it returns ``[n_envs]`` rewards
    equal to the offline :func:`reward_terms` ``total`` at that bar. ``terms`` holds the last
    bar's individual terms. Nothing here reads a tensor back to the host.
    """

    def __init__(self, *, spec: RewardSpec | None = None, n_envs: int, n_assets: int = 0,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        import torch
        self.spec = spec or RewardSpec()
        self.n_envs, self.n_assets = n_envs, n_assets
        dtype = dtype or torch.float32
        z = torch.zeros(n_envs, dtype=dtype, device=device)
        self._start, self._prev, self._level, self._peak = z, z.clone(), z.clone(), z.clone()
        self._w = torch.zeros(n_envs, n_assets, dtype=dtype, device=device)
        self._moments = _Moments.zeros((n_envs,), z)
        self._buf = torch.zeros(n_envs, self.spec.window, dtype=dtype, device=device)
        self._count = torch.zeros(n_envs, dtype=torch.long, device=device)
        self.terms: dict[str, torch.Tensor] = {}

    def reset(self, *, equity: torch.Tensor, weights: torch.Tensor | None = None,
              mask: torch.Tensor | None = None) -> None:
        """Start new episodes (all, or where ``mask`` is True) at ``equity`` and ``weights``."""
        import torch
        m = torch.ones_like(self._prev, dtype=torch.bool) if mask is None else mask
        e = _clean_t(equity.to(self._prev.dtype))
        zero = torch.zeros_like(self._prev)
        self._start = torch.where(m, e, self._start)
        self._prev = torch.where(m, e, self._prev)
        self._level = torch.where(m, zero, self._level)
        self._peak = torch.where(m, zero, self._peak)
        w = torch.zeros_like(self._w) if weights is None else _bounded_t(weights.to(self._w.dtype))
        self._w = torch.where(m[:, None], w, self._w)
        self._moments.reset(m)
        self._buf = torch.where(m[:, None], torch.zeros_like(self._buf), self._buf)
        self._count = torch.where(m, torch.zeros_like(self._count), self._count)

    def step(self, *, equity: torch.Tensor, weights: torch.Tensor | None = None,
             costs: torch.Tensor | None = None) -> torch.Tensor:
        """Reward ``[n_envs]`` of the bar that ended at ``equity``."""
        import torch
        spec = self.spec
        _need(spec, weights, costs)
        e = _clean_t(equity.to(self._prev.dtype))
        ratio = _step_ratio_t(self._prev, e)
        r = ratio - 1.0
        lg = ratio.log()
        terms: dict[str, torch.Tensor] = {}
        if spec.log_growth > 0:
            terms["log_growth"] = lg
        if spec.pnl > 0:
            scale = torch.where(self._start > 0, self._start, torch.ones_like(self._start))
            terms["pnl"] = _bounded_t((e - self._prev) / scale)
        if spec.sharpe > 0 or spec.downside > 0:
            terms.update(self._differential(r))
        level = self._level + lg
        peak = torch.maximum(self._peak, level)
        if spec.drawdown > 0:
            terms["drawdown"] = -((peak - level) - (self._peak - self._level)).clamp_min(0.0)
        if spec.turnover > 0:
            w = _bounded_t(_given(weights).to(self._w.dtype))
            terms["turnover"] = -(w - self._w).abs().sum(-1)
            self._w = w
        if spec.cost > 0:
            alive = self._prev > 0
            frac = _bounded_t(_given(costs).to(e.dtype)).abs() / torch.where(alive, self._prev,
                                                                   torch.ones_like(self._prev))
            terms["cost"] = -_bounded_t(torch.where(alive, frac, torch.zeros_like(frac)))
        if spec.cvar > 0 or spec.expectile > 0:
            terms.update(self._tail(r))
        total = torch.zeros_like(e)
        for name, values in terms.items():
            total = total + getattr(spec, name) * values
        self._prev, self._level, self._peak = e, level, peak
        self.terms = terms
        return total

    def _differential(self, r: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both differential ratios from the same moments, then one moment update."""
        out = {}
        if self.spec.sharpe > 0:
            out["sharpe"] = self._moments.ratio(r, self.spec, downside=False)
        if self.spec.downside > 0:
            out["downside"] = self._moments.ratio(r, self.spec, downside=True)
        self._moments.update(r, self.spec)
        return out

    def _tail(self, r: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tail penalties over a ring buffer of the last ``window`` returns (order is irrelevant)."""
        import torch
        slot = (self._count % self.spec.window)[:, None]
        self._buf = self._buf.scatter(1, slot, _bounded_t(r)[:, None])
        self._count = self._count + 1
        full = self._count >= self.spec.window
        zero = torch.zeros_like(r)
        out = {}
        if self.spec.cvar > 0:
            out["cvar"] = torch.where(full, -cvar_torch(self._buf, alpha=self.spec.alpha)
                                      .clamp_min(0.0), zero)
        if self.spec.expectile > 0:
            out["expectile"] = torch.where(full, expectile_torch(self._buf, tau=self.spec.tau)
                                           .clamp_max(0.0), zero)
        return out
