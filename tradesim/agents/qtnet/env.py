"""Batched torch trading env with the engine's semantics, for ``n_envs`` books on one device.

Per step, as in :mod:`tradesim.engine.loop`: the action taken on the observation of bar t sets
target weights, sized in shares at close t from equity at close t (whole lots unless
fractional); bar t+1 then charges the short-borrow fee, runs the margin check at the open
(liquidating and cancelling the order), fills the order at open t+1 (participation cap,
commission, half-spread, slippage and square-root impact on ``|Δposition|``), marks at close
t+1 and runs the margin check at the close. Rewards come from
:class:`tradesim.rewards.step.OnlineReward`. Ruin (equity <= 0) terminates with an extra
``ruin_penalty``; running out of data terminates after charging the cost of flattening the book
(terminal mark-to-market); ``episode_len`` truncates. Done envs reset themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tradesim.agents.qtnet.features import FEATURES, make_features
from tradesim.agents.qtnet.teachers import teacher_positions
from tradesim.data.view import MarketData
from tradesim.engine.costs import CostModel, load_costs
from tradesim.errors import ConfigError, DataQualityError
from tradesim.rewards.step import OnlineReward, RewardSpec

_YEAR_NS = 365.25 * 86_400 * 1e9
_PRICES = ("open", "high", "low", "close", "volume")


class EnvConfig(BaseModel):
    """Account, cost, reward and episode settings of the env (mirrors BacktestConfig's fields)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_envs: int = Field(64, ge=1)
    episode_len: int | None = Field(256, ge=1, description="None: run to the end of the data")
    initial_cash: float = Field(100_000.0, gt=0)
    costs: CostModel = Field(default_factory=lambda: load_costs("default"))
    max_leverage: float = Field(1.0, gt=0)
    allow_short: bool = True
    maintenance_margin: float = Field(0.25, ge=0, lt=1)
    lot_size: float = Field(1.0, gt=0)
    fractional: bool = False
    reward: RewardSpec = Field(default_factory=RewardSpec)
    ruin_penalty: float = Field(30.0, ge=0, description="> -log(1e-12): ruin is never cheap")
    window: int = Field(1, ge=1, description="bars of features per observation")
    warmup: int = Field(60, ge=1, description="first bar an episode may start at")
    dtype: str = Field("float32", pattern="^(float32|float64)$")
    seed: int = 0

    @field_validator("costs", mode="before")
    @classmethod
    def _costs(cls, value: object) -> CostModel:
        return load_costs(value)


@dataclass(frozen=True, eq=False)
class EnvData:
    """Aligned bars ``[S, T, N]`` of S series (padded to the longest), their features and teachers.

    ``joint`` data has one series of N symbols on their common stamps; ``separate`` data has
    one single-symbol series per symbol (N = 1), which is how a single-asset policy trains.
    """

    symbols: tuple[str, ...]
    time: np.ndarray  # [S, T] datetime64[ns]
    prices: np.ndarray  # [S, T, N, 5] open, high, low, close, volume
    features: np.ndarray  # [S, T, N, F]
    teachers: np.ndarray  # [S, K, T, N]
    lengths: np.ndarray  # [S] valid bars per series
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_market(cls, market: MarketData, *, symbols: tuple[str, ...] | list[str] | None = None,
                    separate: bool = False, allow_short: bool = True,
                    hindsight_teacher: bool = False, k1: float = 0.5, k2: float = 0.5,
                    lookback_days: int = 4) -> EnvData:
        """Build from ``market`` (all its symbols unless named); see the class docstring."""
        names = tuple(symbols or market.symbols)
        groups = [(s,) for s in names] if separate else [names]
        series = [_aligned(market, g) for g in groups]
        longest = max(len(t) for t, _ in series)
        time = np.stack([np.pad(t, (0, longest - len(t)), mode="edge") for t, _ in series])
        prices = np.stack([np.pad(p, ((0, longest - len(p)), (0, 0), (0, 0)), mode="edge")
                           for _, p in series])
        feats, teach = [], []
        for i in range(len(series)):
            cols = {k: prices[i, :, :, j] for j, k in enumerate(_PRICES)}
            feats.append(make_features(time=time[i], k1=k1, k2=k2, lookback_days=lookback_days,
                                       **cols))
            teach.append(teacher_positions(time=time[i], allow_short=allow_short,
                                           hindsight=hindsight_teacher, k1=k1, k2=k2,
                                           lookback_days=lookback_days,
                                           **{k: cols[k] for k in _PRICES[:4]}))
        return cls(symbols=names, time=time, prices=prices, features=np.stack(feats),
                   teachers=np.stack(teach), lengths=np.array([len(t) for t, _ in series]),
                   meta={"separate": separate, "hindsight_teacher": hindsight_teacher,
                         "features": FEATURES, "fingerprints": {
                             s: market.full(s).fingerprint() for s in names}})

    @property
    def n_assets(self) -> int:
        return int(self.prices.shape[2])


def _aligned(market: MarketData, symbols: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Stamps common to ``symbols`` and their OHLCV there ``[T, N, 5]``; checks prices."""
    bars = [market.full(s) for s in symbols]
    common = bars[0].time
    for b in bars[1:]:
        common = np.intersect1d(common, b.time)
    if len(common) < 3:
        raise ConfigError(f"symbols {', '.join(symbols)} share only {len(common)} bar stamps; "
                          "train them separately (separate=True / --separate) or pick overlapping "
                          "data")
    out = np.empty((len(common), len(symbols), 5))
    for j, b in enumerate(bars):
        idx = np.searchsorted(b.time, common)
        for k, name in enumerate(_PRICES):
            out[:, j, k] = getattr(b, name)[idx]
        bad = ~(np.isfinite(out[:, j, :4]).all(axis=1) & (out[:, j, :4] > 0).all(axis=1))
        if bad.any():
            from tradesim.data.quality import Finding
            i = int(np.argmax(bad))
            raise DataQualityError([Finding(symbol=b.symbol, time=common[i], check="price",
                                            message="non-positive or missing OHLC price",
                                            fix="repair the data (quality='repair') or drop the "
                                                "symbol")])
    return common, out


@dataclass(frozen=True, slots=True)
class StepResult:
    """One batched step: next observations (reset ones for done envs) and per-env outcomes."""

    obs: torch.Tensor  # [B, obs_size]
    reward: torch.Tensor  # [B]
    terminated: torch.Tensor  # [B] bool: ruin or end of data
    truncated: torch.Tensor  # [B] bool: episode_len reached
    equity: torch.Tensor  # [B] equity at the close of the new bar (before any reset)
    costs: torch.Tensor  # [B] costs charged in the bar (incl. borrow and liquidation)
    ruined: torch.Tensor  # [B] bool
    final_obs: torch.Tensor | None = None  # observations before any reset (when asked for)


class TradingEnv:
    """``n_envs`` independent books stepping through :class:`EnvData` on one torch device."""

    def __init__(self, *, data: EnvData, config: EnvConfig | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.config = cfg = config or EnvConfig()
        self.data = data
        self.device = torch.device(device)
        self.dtype = getattr(torch, cfg.dtype)
        dev, dt = self.device, self.dtype
        self.prices = torch.as_tensor(data.prices, dtype=dt, device=dev)
        self.features = torch.as_tensor(data.features, dtype=dt, device=dev)
        self.teachers = torch.as_tensor(data.teachers, dtype=dt, device=dev)
        self.lengths = torch.as_tensor(data.lengths, dtype=torch.long, device=dev)
        ns = data.time.astype("datetime64[ns]").astype(np.int64)
        years = np.diff(ns, axis=1, prepend=ns[:, :1]) / _YEAR_NS
        self.dt_years = torch.as_tensor(years, dtype=dt, device=dev)
        if int(data.lengths.min()) < cfg.warmup + 2:
            raise ConfigError(f"a series has {int(data.lengths.min())} bars but warmup is "
                              f"{cfg.warmup}; load more history or lower warmup")
        b, n = cfg.n_envs, data.n_assets
        self.n_envs, self.n_assets = b, n
        self.observation_size = cfg.window * n * data.features.shape[-1] + n + 1
        self._gen = torch.Generator(device=dev)
        self._gen.manual_seed(cfg.seed)
        self._win = torch.arange(cfg.window - 1, -1, -1, device=dev)
        self.reward_fn = OnlineReward(spec=cfg.reward, n_envs=b, n_assets=n, device=dev, dtype=dt)
        self.series = torch.zeros(b, dtype=torch.long, device=dev)
        self.t = torch.zeros(b, dtype=torch.long, device=dev)
        self.t_end = torch.zeros(b, dtype=torch.long, device=dev)
        self.cash = torch.zeros(b, dtype=dt, device=dev)
        self.position = torch.zeros(b, n, dtype=dt, device=dev)
        self.equity = torch.zeros(b, dtype=dt, device=dev)
        c = cfg.costs
        self._fixed, self._prop = c.commission_fixed, (c.commission_bps + c.half_spread_bps
                                                       + c.slippage_bps) * 1e-4
        self._impact, self._cap = c.impact_coef, c.participation_cap
        self._borrow = c.borrow_bps_annual * 1e-4

    # --- episode control ----------------------------------------------------------------------

    def reset(self, *, series: torch.Tensor | None = None, start: torch.Tensor | None = None,
              end: torch.Tensor | None = None) -> torch.Tensor:
        """Start every env (random series and start unless given); returns observations."""
        self._reset(torch.ones(self.n_envs, dtype=torch.bool, device=self.device),
                    series=series, start=start, end=end)
        return self.observe()

    def _reset(self, mask: torch.Tensor, *, series: torch.Tensor | None = None,
               start: torch.Tensor | None = None, end: torch.Tensor | None = None) -> None:
        cfg, b = self.config, self.n_envs
        s = series if series is not None else torch.randint(
            0, self.lengths.shape[0], (b,), generator=self._gen, device=self.device)
        last = self.lengths[s] - 1
        span = cfg.episode_len if cfg.episode_len is not None else None
        hi = last - (span or 0) if span is not None else last - 1
        hi = torch.maximum(hi, torch.full_like(hi, cfg.warmup))
        u = torch.rand(b, generator=self._gen, device=self.device, dtype=torch.float64)
        t0 = start if start is not None else cfg.warmup + (u * (hi - cfg.warmup + 1)).long()
        t_end = end if end is not None else (torch.minimum(t0 + span, last) if span else last)
        self.series = torch.where(mask, s, self.series)
        self.t = torch.where(mask, t0, self.t)
        self.t_end = torch.where(mask, t_end, self.t_end)
        cash = torch.full_like(self.cash, cfg.initial_cash)
        self.cash = torch.where(mask, cash, self.cash)
        self.position = torch.where(mask[:, None], torch.zeros_like(self.position), self.position)
        self.equity = torch.where(mask, cash, self.equity)
        self.reward_fn.reset(equity=self.equity, mask=mask)

    def observe(self) -> torch.Tensor:
        """Observations ``[B, obs_size]``: feature windows, then weights and log equity growth."""
        idx = (self.t[:, None] - self._win).clamp_min(0)  # [B, W]
        f = self.features[self.series[:, None], idx]  # [B, W, N, F]
        close = self.prices[self.series, self.t, :, 3]
        return torch.cat([f.flatten(1), self._weights(close),
                          (self.equity / self.config.initial_cash).clamp_min(1e-12).log()[:, None]],
                         dim=1)

    def demonstrations(self) -> torch.Tensor:
        """Teachers' positions at the current bar ``[B, K, N]`` (training only; not observed)."""
        return self.teachers[self.series, :, self.t]

    def _weights(self, close: torch.Tensor) -> torch.Tensor:
        eq = self.equity[:, None]
        return torch.where(eq > 0, self.position * close / eq.clamp_min(1e-12),
                           torch.zeros_like(self.position))

    def action_weights(self, action: torch.Tensor) -> torch.Tensor:
        """Target weights from actions in [-1, 1] per asset: gross at most ``max_leverage``."""
        a = action.to(self.dtype).clamp(-1.0, 1.0)
        if not self.config.allow_short:
            a = a.clamp_min(0.0)
        return a * (self.config.max_leverage / self.n_assets)

    # --- one bar ------------------------------------------------------------------------------

    def _costs(self, qty: torch.Tensor, price: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
        """Cost of fills of ``qty`` shares (only ``|qty|`` counts), summed over assets ``[B]``."""
        q = qty.abs()
        notional = q * price
        cost = notional * self._prop
        if self._fixed:
            cost = cost + torch.where(q > 0, torch.full_like(q, self._fixed), torch.zeros_like(q))
        if self._impact:
            part = torch.where(volume > 0, q / volume.clamp_min(1e-300), torch.ones_like(q))
            cost = cost + notional * self._impact * part.clamp_max(1.0).sqrt()
        return cost.sum(-1)

    def _margin(self, price: torch.Tensor, volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Liquidate books below maintenance margin at ``price``; returns (liquidated, costs)."""
        pos = self.position
        value = pos * price
        gross = value.abs().sum(-1)
        equity = self.cash + value.sum(-1)
        liq = (gross > 0) & (equity < self.config.maintenance_margin * gross)
        qty = torch.where(liq[:, None], -pos, torch.zeros_like(pos))
        cost = self._costs(qty, price, volume)
        self.cash = self.cash - (qty * price).sum(-1) - cost
        self.position = pos + qty
        return liq, cost

    def step(self, action: torch.Tensor, *, with_final_obs: bool = False) -> StepResult:
        """Act on the current bar's observation with ``action [B, N]``; advance one bar.

        ``with_final_obs`` also returns the observations before done envs reset (to bootstrap
        values of truncated episodes).
        """
        cfg = self.config
        s, t = self.series, self.t
        close_t = self.prices[s, t, :, 3]
        w = self.action_weights(action)
        raw = w * self.equity[:, None] / close_t
        target = raw if cfg.fractional else torch.trunc(raw / cfg.lot_size) * cfg.lot_size
        delta = torch.where((target - self.position).abs() > 1e-12, target - self.position,
                            torch.zeros_like(raw))
        t1 = t + 1
        bar = self.prices[s, t1]  # [B, N, 5]
        open_, close, volume = bar[..., 0], bar[..., 3], bar[..., 4]
        costs = torch.zeros_like(self.cash)
        if self._borrow:
            short = (-self.position).clamp_min(0.0) * close_t
            fee = short.sum(-1) * self._borrow * self.dt_years[s, t1]
            self.cash = self.cash - fee
            costs = costs + fee
        liq_open, c_liq = self._margin(open_, volume)
        costs = costs + c_liq
        qty = torch.where(liq_open[:, None], torch.zeros_like(delta), delta)
        if self._cap is not None:
            qty = qty.sign() * torch.minimum(qty.abs(), self._cap * volume.clamp_min(0.0))
        fill_cost = self._costs(qty, open_, volume)
        self.cash = self.cash - (qty * open_).sum(-1) - fill_cost
        self.position = self.position + qty
        costs = costs + fill_cost
        _, c_liq = self._margin(close, volume)
        costs = costs + c_liq
        self.t = t1
        self.equity = self.cash + (self.position * close).sum(-1)
        reward = self.reward_fn.step(equity=self.equity, weights=self._weights(close), costs=costs)
        ruined = self.equity <= 0
        end_of_data = (t1 >= self.lengths[s] - 1) & ~ruined
        truncated = (t1 >= self.t_end) & ~ruined & ~end_of_data
        flatten = self._costs(self.position, close, volume) / self.equity.clamp_min(1e-12)
        reward = reward - torch.where(ruined, torch.full_like(reward, cfg.ruin_penalty),
                                      torch.where(end_of_data, flatten, torch.zeros_like(reward)))
        terminated = ruined | end_of_data
        result_equity = self.equity
        done = terminated | truncated
        final_obs = self.observe() if with_final_obs else None
        self._reset(done)
        return StepResult(obs=self.observe(), reward=reward, terminated=terminated,
                          truncated=truncated, equity=result_equity, costs=costs, ruined=ruined,
                          final_obs=final_obs)


def scripted_equity(*, data: EnvData, weights: np.ndarray, config: EnvConfig,
                    series: int = 0, start: int = 0) -> np.ndarray:
    """Equity at each close from bar ``start`` when target ``weights [T, N]`` are set at each bar.

    One env, no resets: used to compare with the engine (parity) and in benchmarks.
    """
    cfg = config.model_copy(update={"n_envs": 1, "episode_len": None, "warmup": max(start, 1)})
    env = TradingEnv(data=data, config=cfg)
    one = torch.tensor([series])
    env.reset(series=one, start=torch.tensor([start]), end=torch.tensor([int(data.lengths[series]) - 1]))
    scale = cfg.max_leverage / env.n_assets
    out = [float(env.equity[0])]
    for k in range(min(weights.shape[0] - 1, int(data.lengths[series]) - 1 - start)):
        res = env.step(torch.as_tensor(weights[k] / scale, dtype=env.dtype)[None])
        out.append(float(res.equity[0]))
        if bool(res.terminated[0]):
            break
    return np.array(out)
