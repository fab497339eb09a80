"""Batched torch trading env with the engine's semantics, for ``n_envs`` books on one device.

Per step, as in :mod:`tradesim.engine.session`: the action taken on the observation of bar t sets
target weights, sized in shares at close t from equity at close t (whole lots unless
fractional); bar t+1 then charges the short-borrow fee, runs the margin check at the open
(liquidating and cancelling the order), fills the order at open t+1 (participation cap in
whole lots, reductions first, the rest shrunk to the cash and leverage available at the open,
commission, half-spread, slippage and square-root impact on ``|Δposition|``), marks at close
t+1 and runs the margin check at the close. A target the cap held back keeps working on the
next bars while the action for that asset is NaN (a hold); any number replaces it. Rewards come from
:class:`tradesim.rewards.step.OnlineReward`. Ruin (equity <= 0) terminates with an extra
``ruin_penalty``; running out of data terminates after charging the cost of flattening the book
(terminal mark-to-market); ``episode_len`` truncates. Done envs reset themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import ConfigDict, Field, field_validator

from tradesim.agents.qtnet.features import FEATURES, make_features
from tradesim.agents.qtnet.teachers import teacher_positions
from tradesim.data.view import MarketData
from tradesim.engine.account import AccountConfig
from tradesim.engine.core import SESSION_NS, YEAR_NS
from tradesim.errors import ConfigError, DataQualityError
from tradesim.rewards.step import OnlineReward, RewardSpec

_PRICES = ("open", "high", "low", "close", "volume")


class EnvConfig(AccountConfig):
    """The env's account rules (:class:`AccountConfig`, the backtest's own; shorting on by
    default, fills at the next open), then reward and episode settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow_short: bool = True
    n_envs: int = Field(64, ge=1)
    episode_len: int | None = Field(256, ge=1, description="None: run to the end of the data")
    reward: RewardSpec = Field(default_factory=RewardSpec)
    ruin_penalty: float = Field(30.0, ge=0, description="> -log(1e-12): ruin is never cheap")
    window: int = Field(1, ge=1, description="bars of features per observation")
    warmup: int = Field(60, ge=1, description="first bar an episode may start at")
    dtype: str = Field("float32", pattern="^(float32|float64)$")
    seed: int = 0

    @field_validator("fill")
    @classmethod
    def _next_open(cls, value: str) -> str:
        if value != "next_open":
            raise ValueError("the RL envs fill at the next bar's open; use fill = \"next_open\"")
        return value


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
            feats.append(make_features(time=time[i], open=cols["open"], high=cols["high"],
                                       low=cols["low"], close=cols["close"],
                                       volume=cols["volume"], k1=k1, k2=k2,
                                       lookback_days=lookback_days))
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
    """``n_envs`` independent books stepping through :class:`EnvData` on one torch device.

    Bars and features are stored flat (row = series x bar) so each step gathers whole rows.
    Rare branches (liquidation, resets, end of data) run only when some env needs them on the
    CPU; on accelerators they run masked every step, so no step waits on the host.
    """

    def __init__(self, *, data: EnvData, config: EnvConfig | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.config = cfg = config or EnvConfig()
        self.data = data
        self.device = torch.device(device)
        self.dtype = getattr(torch, cfg.dtype)
        dev, dt = self.device, self.dtype
        n_series, n_bars, n, _ = data.prices.shape
        self._rows = n_bars
        self._px = torch.as_tensor(data.prices.reshape(n_series * n_bars, n * 5), dtype=dt,
                                   device=dev)
        feats = data.features.reshape(n_series * n_bars, -1)
        n_feats = feats.shape[1]
        if cfg.window == 1:  # rows shaped like observations: one gather, account state in place
            feats = np.pad(feats, ((0, 0), (0, n + 1)))
        self._ft = torch.as_tensor(feats, dtype=dt, device=dev)
        self.teachers = torch.as_tensor(data.teachers, dtype=dt, device=dev)
        self.lengths = torch.as_tensor(data.lengths, dtype=torch.long, device=dev)
        ns = data.time.astype("datetime64[ns]").astype(np.int64)
        years = np.diff(ns, axis=1, prepend=ns[:, :1]) / YEAR_NS
        self._dt_years = torch.as_tensor(years.reshape(-1), dtype=dt, device=dev)
        if int(data.lengths.min()) < cfg.warmup + 2:
            raise ConfigError(f"a series has {int(data.lengths.min())} bars but warmup is "
                              f"{cfg.warmup}; load more history or lower warmup")
        b = cfg.n_envs
        self.n_envs, self.n_assets = b, n
        self.observation_size = cfg.window * n_feats + n + 1
        self._gen = torch.Generator(device=dev)
        self._gen.manual_seed(cfg.seed)
        self._win = torch.arange(cfg.window - 1, -1, -1, device=dev)
        self._host = self.device.type == "cpu"
        self.reward_fn = OnlineReward(spec=cfg.reward, n_envs=b, n_assets=n, device=dev, dtype=dt)
        self.series = torch.zeros(b, dtype=torch.long, device=dev)
        self.t = torch.zeros(b, dtype=torch.long, device=dev)
        self.t_end = torch.zeros(b, dtype=torch.long, device=dev)
        self.cash = torch.zeros(b, dtype=dt, device=dev)
        self.position = torch.zeros(b, n, dtype=dt, device=dev)
        self.equity = torch.zeros(b, dtype=dt, device=dev)
        self._close = torch.ones(b, n, dtype=dt, device=dev)  # close of bar t
        self._w = torch.zeros(b, n, dtype=dt, device=dev)  # book weights at close t
        self._target = torch.zeros(b, n, dtype=dt, device=dev)  # working targets (shares)
        self._gap = torch.full((b,), torch.inf, dtype=dt, device=dev)  # smallest bar spacing
        c = cfg.costs
        self._bpd_fixed = c.bars_per_day
        self._bpd = torch.full((b,), float(c.bars_per_day or 1.0), dtype=dt, device=dev)
        self._fixed, self._prop = c.commission_fixed, (c.commission_bps + c.half_spread_bps
                                                       + c.slippage_bps) * 1e-4
        self._impact, self._cap = c.impact_scale, c.participation_cap
        self._borrow = c.borrow_bps_annual * 1e-4

    def _any(self, mask: torch.Tensor) -> bool:
        """Whether a masked branch must run (always on accelerators: no host sync there)."""
        return bool(mask.any()) if self._host else True

    def _bar(self, row: torch.Tensor) -> torch.Tensor:
        """OHLCV ``[B, N, 5]`` of flat rows ``row``."""
        return self._px.index_select(0, row).view(-1, self.n_assets, 5)

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
        span = cfg.episode_len
        hi = (last - span if span is not None else last - 1).clamp_min(cfg.warmup)
        u = torch.rand(b, generator=self._gen, device=self.device, dtype=torch.float64)
        t0 = start if start is not None else cfg.warmup + (u * (hi - cfg.warmup + 1)).long()
        t_end = end if end is not None else (torch.minimum(t0 + span, last) if span else last)
        self.series = torch.where(mask, s, self.series)
        self.t = torch.where(mask, t0, self.t)
        self.t_end = torch.where(mask, t_end, self.t_end)
        self.cash = torch.where(mask, cfg.initial_cash, self.cash)
        self.position = torch.where(mask[:, None], 0.0, self.position)
        self.equity = torch.where(mask, cfg.initial_cash, self.equity)
        close = self._bar(self.series * self._rows + self.t)[..., 3]
        self._close = torch.where(mask[:, None], close, self._close)
        self._w = torch.where(mask[:, None], 0.0, self._w)
        self._target = torch.where(mask[:, None], 0.0, self._target)
        self._gap = torch.where(mask, torch.inf, self._gap)
        if self._bpd_fixed is None:
            self._bpd = torch.where(mask, 1.0, self._bpd)
        self.reward_fn.reset(equity=self.equity, mask=mask)

    def observe(self) -> torch.Tensor:
        """Observations ``[B, obs_size]``: feature windows, then weights and log equity growth."""
        row = self.series * self._rows + self.t
        growth = (self.equity / self.config.initial_cash).clamp_min(1e-12).log()
        if self.config.window == 1:
            obs = self._ft.index_select(0, row)
            obs[:, -self.n_assets - 1:-1] = self._w
            obs[:, -1] = growth
            return obs
        idx = (row[:, None] - self._win).clamp_min((self.series * self._rows)[:, None])
        f = self._ft.index_select(0, idx.reshape(-1)).view(self.n_envs, -1)
        return torch.cat([f, self._w, growth[:, None]], dim=1)

    def demonstrations(self) -> torch.Tensor:
        """Teachers' positions at the current bar ``[B, K, N]`` (training only; not observed)."""
        return self.teachers[self.series, :, self.t]

    def _weights(self, close: torch.Tensor) -> torch.Tensor:
        eq = self.equity[:, None]
        return torch.where(eq > 0, self.position * close / eq.clamp_min(1e-12), 0.0)

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
            cost = cost + torch.where(q > 0, self._fixed, 0.0)
        if self._impact:
            day = volume * self._bpd[:, None]
            part = torch.where(day > 0, q / day.clamp_min(1e-300), 1.0)
            cost = cost + notional * self._impact * part.clamp_max(1.0).sqrt()
        return cost.sum(-1)

    def _lots(self, qty: torch.Tensor) -> torch.Tensor:
        """``qty`` toward zero to whole lots (core.lots_down)."""
        if self.config.fractional:
            return qty
        return torch.trunc(qty / self.config.lot_size) * self.config.lot_size

    def _fill(self, delta: torch.Tensor, reduces: torch.Tensor, price: torch.Tensor,
              volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Book fills of ``delta`` at ``price`` as the broker does; returns their costs ``[B]``
        and which fills were shrunk ``[B, N]`` (those orders end).

        Fills of orders that only reduce a position (``reduces``) go first; then each asset,
        shrunk to what the book can pay for at the fill price (:func:`tradesim.engine.core.affordable`).
        """
        pos = self.position
        first = torch.where(reduces, delta, 0.0)
        cost = self._costs(first, price, volume)
        self.cash = self.cash - (first * price).sum(-1) - cost
        self.position = pos + first
        rest = torch.where(reduces, 0.0, delta)
        shrunk_all = torch.zeros_like(reduces)
        lev = self.config.max_leverage
        for j in range(self.n_assets):
            q = rest[:, j]
            if not self._any(q != 0):
                continue
            value = self.position * price
            equity = self.cash + value.sum(-1)
            gross_rest = torch.cat([value[:, :j], value[:, j + 1:]], dim=1).abs().sum(-1)
            held, p, v = self.position[:, j], price[:, j], volume[:, j]
            size = q.abs()
            opposite = (held != 0) & ((held > 0) != (q > 0))
            reduce = torch.where(opposite, torch.minimum(size, held.abs()), 0.0)
            base = torch.where(opposite, 0.0, held.abs())
            rate = torch.full_like(size, self._prop)
            if self._impact:
                day = v * self._bpd
                part = torch.where(day > 0, size / day.clamp_min(1e-300), 1.0)
                rate = rate + self._impact * part.clamp_max(1.0).sqrt()
            room = lev * (equity - self._fixed - reduce * p * rate) - gross_rest - base * p
            most = room / (p * (1.0 + lev * rate))
            short = (size - reduce > 0) & (most < size - reduce)
            shrunk = torch.copysign(reduce + self._lots(most.clamp_min(0.0)), q)
            shrunk_all[:, j] = short & (shrunk != q)
            q = torch.where(short, shrunk, q)
            c = self._costs(q[:, None], price[:, j:j + 1], volume[:, j:j + 1])
            self.cash = self.cash - q * p - c
            self.position = self.position.clone()
            self.position[:, j] = held + q
            cost = cost + c
        return cost, shrunk_all

    def _margin(self, price: torch.Tensor, volume: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Liquidate books below maintenance margin at ``price``; (liquidated mask, costs)."""
        pos = self.position
        value = pos * price
        gross = value.abs().sum(-1)
        liq = (gross > 0) & (self.cash + value.sum(-1) < self.config.maintenance_margin * gross)
        if not self._any(liq):
            return liq, None
        qty = torch.where(liq[:, None], -pos, 0.0)
        cost = self._costs(qty, price, volume)
        self.cash = self.cash - (qty * price).sum(-1) - cost
        self.position = pos + qty
        return liq, cost

    def step(self, action: torch.Tensor, *, with_final_obs: bool = False) -> StepResult:
        """Act on the current bar's observation with ``action [B, N]``; advance one bar.

        A NaN action holds that asset: its working target (one the participation cap held
        back) keeps working. ``with_final_obs`` also returns the observations before done envs
        reset (to bootstrap values of truncated episodes).
        """
        cfg = self.config
        row = self.series * self._rows + self.t
        close_t = self._close
        raw = self.action_weights(action) * (self.equity[:, None] / close_t)
        sized = raw if cfg.fractional else torch.trunc(raw / cfg.lot_size) * cfg.lot_size
        target = torch.where(action.isnan(), self._target, sized)
        delta = target - self.position
        delta = torch.where(delta.abs() > 1e-12, delta, 0.0)
        row1 = row + 1
        if self._bpd_fixed is None:  # bars per day from the smallest spacing seen (as the account)
            dt = self._dt_years.index_select(0, row1)
            self._gap = torch.where(dt > 0, torch.minimum(self._gap, dt), self._gap)
            self._bpd = (SESSION_NS / YEAR_NS / self._gap).clamp_min(1.0)
        bar = self._bar(row1)
        open_, close, volume = bar[..., 0], bar[..., 3], bar[..., 4]
        costs = torch.zeros_like(self.cash)
        if self._borrow:
            short = (-self.position).clamp_min(0.0) * close_t
            costs = short.sum(-1) * (self._borrow * self._dt_years.index_select(0, row1))
            self.cash = self.cash - costs
        liq_open, c_liq = self._margin(open_, volume)
        if c_liq is not None:
            costs = costs + c_liq
            delta = torch.where(liq_open[:, None], 0.0, delta)
        pos = self.position  # orders that only reduce a position fill first (before the cap)
        reduces = (pos != 0) & ((pos > 0) != (delta > 0)) & (delta.abs() <= pos.abs())
        cut = torch.zeros_like(reduces)
        if self._cap is not None:
            cap = self._cap * volume.clamp_min(0.0)
            capped = torch.clamp(delta, min=-cap, max=cap)
            cut = capped != delta
            delta = torch.where(cut, self._lots(capped), delta)
        c_fill, shrunk = self._fill(delta, reduces, open_, volume)
        costs = costs + c_fill
        working = cut & ~shrunk  # held back by the cap, not by cash: works on next bar
        liq_close, c_liq = self._margin(close, volume)
        if c_liq is not None:
            costs = costs + c_liq
            working = working & ~liq_close[:, None]
        self._target = torch.where(working, target, self.position)
        self.t = self.t + 1
        self.equity = self.cash + (self.position * close).sum(-1)
        self._close, self._w = close, self._weights(close)
        reward = self.reward_fn.step(equity=self.equity, weights=self._w, costs=costs)
        ruined = self.equity <= 0
        end_of_data = (self.t >= self.lengths[self.series] - 1) & ~ruined
        truncated = (self.t >= self.t_end) & ~ruined & ~end_of_data
        reward = torch.where(ruined, reward - cfg.ruin_penalty, reward)
        if self._any(end_of_data):  # terminal mark-to-market: pay for flattening the book
            flatten = self._costs(self.position, close, volume) / self.equity.clamp_min(1e-12)
            reward = torch.where(end_of_data, reward - flatten, reward)
        terminated = ruined | end_of_data
        equity = self.equity
        done = terminated | truncated
        final_obs = self.observe() if with_final_obs else None
        if self._any(done):
            self._reset(done)
        return StepResult(obs=self.observe(), reward=reward, terminated=terminated,
                          truncated=truncated, equity=equity, costs=costs, ruined=ruined,
                          final_obs=final_obs)


def scripted_equity(*, data: EnvData, weights: np.ndarray, config: EnvConfig,
                    series: int = 0, start: int = 0) -> np.ndarray:
    """Equity at each close from bar ``start`` when target ``weights [T, N]`` are set at each bar.

    One env, no resets: used to compare with the engine (parity) and in benchmarks.
    """
    cfg = config.model_copy(update={"n_envs": 1, "episode_len": None, "warmup": max(start, 1)})
    env = TradingEnv(data=data, config=cfg)
    one = torch.tensor([series])
    env.reset(series=one, start=torch.tensor([start]),
              end=torch.tensor([int(data.lengths[series]) - 1]))
    scale = cfg.max_leverage / env.n_assets
    out = [float(env.equity[0])]
    for k in range(min(weights.shape[0] - 1, int(data.lengths[series]) - 1 - start)):
        res = env.step(torch.as_tensor(weights[k] / scale, dtype=env.dtype)[None])
        out.append(float(res.equity[0]))
        if bool(res.terminated[0]):
            break
    return np.array(out)
