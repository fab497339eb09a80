"""Honest evaluation statistics: seeds, bootstrap Sharpe CIs, PSR/DSR with a trial registry,
PBO by CSCV, and purged walk-forward / k-fold splits.

Sharpe ratios here are per bar (not annualised) unless a name says ``annual``; PSR and DSR
follow Bailey & Lopez de Prado (2012, 2014) with kurtosis in the non-excess convention (3 for a
normal). The point Sharpe matches :func:`tradesim.rewards.metrics.compute_metrics` (ddof=1).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats as sps

from tradesim.errors import ConfigError
from tradesim.rewards.metrics import TRADING_DAYS

_EULER = 0.5772156649015329


# --- seeds ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SeedSummary:
    """A metric over seeds: mean with a Student-t confidence interval, and its spread."""

    n: int
    mean: float
    std: float
    sem: float
    ci_low: float
    ci_high: float
    median: float
    min: float
    max: float


def aggregate_seeds(values: Mapping[int, float] | Sequence[float], *,
                    confidence: float = 0.95) -> SeedSummary:
    """Summarise one metric across seeds (a t-interval on the mean; NaN spread for one seed)."""
    v = np.asarray(list(values.values()) if isinstance(values, Mapping) else list(values),
                   dtype=np.float64)
    if v.size == 0 or not np.isfinite(v).all():
        raise ConfigError(f"aggregate_seeds needs one finite value per seed, got {v.tolist()}")
    n = v.size
    std = float(v.std(ddof=1)) if n > 1 else float("nan")
    sem = std / math.sqrt(n) if n > 1 else float("nan")
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sem if n > 1 else float("nan")
    return SeedSummary(n=n, mean=float(v.mean()), std=std, sem=sem, ci_low=float(v.mean() - half),
                       ci_high=float(v.mean() + half), median=float(np.median(v)),
                       min=float(v.min()), max=float(v.max()))


# --- Sharpe and its bootstrap ---------------------------------------------------------------

def sharpe_ratio(returns: np.ndarray) -> float:
    """Per-bar Sharpe ratio of simple returns (mean / sample std; NaN for a flat series)."""
    return float(_sharpe_rows(_returns(returns)[None, :])[0])


def _sharpe_rows(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=-1, ddof=1)
    mean = x.mean(axis=-1)
    return np.divide(mean, sd, out=np.full_like(mean, np.nan), where=sd > 1e-12)


def _returns(returns: np.ndarray, *, min_len: int = 3) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or r.shape[0] < min_len:
        raise ConfigError(f"returns must be one series of at least {min_len} per-bar returns, "
                          f"got shape {r.shape}")
    bad = ~np.isfinite(r)
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigError(f"returns[{i}] is {r[i]}; drop or fill non-finite returns first")
    return r


@dataclass(frozen=True, slots=True)
class SharpeCI:
    """Annualised Sharpe with a bootstrap percentile interval."""

    sharpe: float
    low: float
    high: float
    confidence: float
    n_boot: int
    block_length: int
    method: str


def bootstrap_indices(n: int, *, n_boot: int, block_length: int,
                      method: Literal["stationary", "circular"] = "stationary",
                      seed: int = 0) -> np.ndarray:
    """``[n_boot, n]`` resampling indices: stationary (Politis-Romano) or circular blocks."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    if method == "stationary":
        new = rng.random((n_boot, n)) < 1.0 / block_length
    elif method == "circular":
        new = np.broadcast_to(t % block_length == 0, (n_boot, n))
    else:
        raise ConfigError(f"bootstrap method {method!r} is unknown; use 'stationary' or 'circular'")
    new = new.copy()
    new[:, 0] = True
    starts = rng.integers(0, n, (n_boot, n))
    block_at = np.maximum.accumulate(np.where(new, t, 0), axis=1)
    return (np.take_along_axis(starts, block_at, axis=1) + t - block_at) % n


def bootstrap_sharpe_ci(returns: np.ndarray, *, n_boot: int = 2000,
                        block_length: int | None = None,
                        method: Literal["stationary", "circular"] = "stationary",
                        confidence: float = 0.95, seed: int = 0,
                        periods_per_year: float = TRADING_DAYS) -> SharpeCI:
    """Percentile CI of the annualised Sharpe by a seeded block bootstrap.

    Blocks keep serial dependence (volatility clustering) that an i.i.d. bootstrap destroys;
    the default block length is ``ceil(n ** (1/3))``.
    """
    r = _returns(returns)
    n = r.shape[0]
    length = block_length or max(1, math.ceil(n ** (1 / 3)))
    idx = bootstrap_indices(n, n_boot=n_boot, block_length=length, method=method, seed=seed)
    boot = _sharpe_rows(r[idx]) * math.sqrt(periods_per_year)
    boot = boot[np.isfinite(boot)]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail]) if boot.size else (np.nan, np.nan)
    return SharpeCI(sharpe=sharpe_ratio(r) * math.sqrt(periods_per_year), low=float(low),
                    high=float(high), confidence=confidence, n_boot=n_boot, block_length=length,
                    method=method)


# --- PSR and DSR ----------------------------------------------------------------------------

def probabilistic_sharpe_ratio(*, sharpe: float, n_obs: int, skew: float = 0.0,
                               kurtosis: float = 3.0, benchmark: float = 0.0) -> float:
    """P(true Sharpe > benchmark) given a per-bar Sharpe from ``n_obs`` returns (Bailey-LdP 2012)."""
    if n_obs < 2:
        raise ConfigError(f"n_obs is {n_obs}; PSR needs at least 2 returns")
    var = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe ** 2
    if not var > 0:
        raise ConfigError(f"skew={skew}, kurtosis={kurtosis} and sharpe={sharpe} give a "
                          "non-positive Sharpe variance; pass non-excess kurtosis (3 = normal)")
    return float(sps.norm.cdf((sharpe - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var)))


def expected_max_sharpe(*, n_trials: int, variance: float) -> float:
    """Expected maximum per-bar Sharpe of ``n_trials`` unskilled trials with Sharpe ``variance``."""
    if n_trials < 1 or variance < 0:
        raise ConfigError(f"n_trials={n_trials}, variance={variance}: need n_trials >= 1 and "
                          "variance >= 0")
    if n_trials == 1:
        return 0.0
    z = ((1 - _EULER) * sps.norm.ppf(1 - 1 / n_trials)
         + _EULER * sps.norm.ppf(1 - 1 / (n_trials * math.e)))
    return float(math.sqrt(variance) * z)


def deflated_sharpe_ratio(*, sharpe: float, n_obs: int, n_trials: int, trials_variance: float,
                          skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """PSR against the Sharpe the best of ``n_trials`` would show by luck (Bailey-LdP 2014)."""
    sr0 = expected_max_sharpe(n_trials=n_trials, variance=trials_variance)
    return probabilistic_sharpe_ratio(sharpe=sharpe, n_obs=n_obs, skew=skew, kurtosis=kurtosis,
                                      benchmark=sr0)


def moments(returns: np.ndarray) -> dict[str, float]:
    """Per-bar Sharpe, skew and non-excess kurtosis of a return series, and its length."""
    r = _returns(returns)
    return {"sharpe": sharpe_ratio(r), "skew": float(sps.skew(r)),
            "kurtosis": float(sps.kurtosis(r, fisher=False)), "n_obs": int(r.shape[0])}


class TrialRegistry:
    """Every configuration tried, persisted in SQLite, so DSR deflates by the real search.

    A trial is one (experiment, config) pair; several seeds of it are one trial whose Sharpe is
    the mean over its seeds. Recording the same (experiment, config, seed) again replaces it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS trials (experiment TEXT, config_hash TEXT, "
                       "seed INTEGER, config TEXT, sharpe REAL, n_obs INTEGER, skew REAL, "
                       "kurtosis REAL, PRIMARY KEY (experiment, config_hash, seed))")

    def _db(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise ConfigError(f"trial registry {self.path} cannot be opened ({exc}); pass a "
                              "writable path") from exc

    def record(self, *, experiment: str, config: Mapping, sharpe: float, n_obs: int,
               skew: float = 0.0, kurtosis: float = 3.0, seed: int = 0) -> str:
        """Count one run of ``config`` (per-bar ``sharpe``); returns the config's hash."""
        if not math.isfinite(sharpe):
            raise ConfigError(f"trial of {experiment!r} has sharpe {sharpe}; record a finite "
                              "per-bar Sharpe (a flat run has Sharpe 0)")
        text = json.dumps(dict(config), sort_keys=True, default=str)
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (experiment, key, seed, text, float(sharpe), int(n_obs), float(skew),
                        float(kurtosis)))
        return key

    def trials(self, experiment: str) -> pd.DataFrame:
        """One row per configuration: its hash, config, mean Sharpe over seeds and seed count."""
        with self._db() as db:
            rows = db.execute("SELECT config_hash, config, AVG(sharpe), COUNT(*) FROM trials "
                              "WHERE experiment = ? GROUP BY config_hash ORDER BY config_hash",
                              (experiment,)).fetchall()
        return pd.DataFrame(rows, columns=["config_hash", "config", "sharpe", "seeds"])

    def n_trials(self, experiment: str) -> int:
        return len(self.trials(experiment))

    def sharpe_variance(self, experiment: str) -> float:
        """Variance across configurations of their per-bar Sharpe (0 with fewer than 2)."""
        s = self.trials(experiment)["sharpe"].to_numpy(dtype=np.float64)
        return float(s.var(ddof=1)) if s.size > 1 else 0.0

    def deflated_sharpe(self, *, experiment: str, returns: np.ndarray) -> float:
        """DSR of the chosen strategy's ``returns`` against every trial of ``experiment``."""
        n = self.n_trials(experiment)
        if n == 0:
            raise ConfigError(f"trial registry {self.path} has no trials for {experiment!r}; "
                              "record every configuration you tried before deflating")
        m = moments(returns)
        return deflated_sharpe_ratio(sharpe=m["sharpe"], n_obs=int(m["n_obs"]), n_trials=n,
                                     trials_variance=self.sharpe_variance(experiment),
                                     skew=m["skew"], kurtosis=m["kurtosis"])


# --- PBO by CSCV ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PBOResult:
    """PBO and the per-split logits of the in-sample winner's out-of-sample relative rank."""

    pbo: float
    logits: np.ndarray
    n_splits: int
    n_combinations: int
    is_best: np.ndarray  # in-sample metric of the chosen configuration, per combination
    oos_of_best: np.ndarray  # its out-of-sample metric, per combination


def probability_of_backtest_overfitting(returns: np.ndarray, *, n_splits: int = 16,
                                        metric: Literal["sharpe", "mean"] = "sharpe") -> PBOResult:
    """PBO by combinatorially symmetric cross-validation (Bailey, Borwein, LdP, Zhu 2015).

    ``returns [T, N]`` holds the per-bar returns of N configurations on the same bars. Rows are
    cut into ``n_splits`` blocks; for every half of the blocks the in-sample best configuration
    is ranked out of sample, ``w = rank / (N + 1)``, ``logit = ln(w / (1 - w))``, and PBO is
    the share of logits <= 0 (the winner lands at or below the median out of sample).
    """
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ConfigError(f"returns must be bars x configurations with at least 2 "
                          f"configurations, got shape {m.shape}")
    if n_splits < 2 or n_splits % 2 or m.shape[0] < 2 * n_splits:
        raise ConfigError(f"n_splits={n_splits} must be even, >= 2 and at most half the "
                          f"{m.shape[0]} bars")
    if not np.isfinite(m).all():
        row, col = np.argwhere(~np.isfinite(m))[0].tolist()
        raise ConfigError(f"returns[{row}, {col}] is not finite; clean the matrix first")
    blocks = np.array_split(np.arange(m.shape[0]), n_splits)
    s1 = np.stack([m[b].sum(axis=0) for b in blocks])
    s2 = np.stack([(m[b] ** 2).sum(axis=0) for b in blocks])
    counts = np.array([b.shape[0] for b in blocks], dtype=np.float64)
    combos = np.array([np.isin(np.arange(n_splits), c)
                       for c in itertools.combinations(range(n_splits), n_splits // 2)],
                      dtype=np.float64)
    is_metric = _block_metric(combos @ s1, combos @ s2, combos @ counts, metric)
    oos_metric = _block_metric((1 - combos) @ s1, (1 - combos) @ s2, (1 - combos) @ counts,
                               metric)
    best = np.argmax(is_metric, axis=1)
    rows = np.arange(combos.shape[0])
    oos_best = oos_metric[rows, best]
    rank = (oos_metric < oos_best[:, None]).sum(axis=1) + 1  # 1 = worst out of sample
    w = rank / (m.shape[1] + 1.0)
    logits = np.log(w / (1 - w))
    return PBOResult(pbo=float(np.mean(logits <= 0)), logits=logits, n_splits=n_splits,
                     n_combinations=int(combos.shape[0]), is_best=is_metric[rows, best],
                     oos_of_best=oos_best)


def _block_metric(s1: np.ndarray, s2: np.ndarray, n: np.ndarray, metric: str) -> np.ndarray:
    """Mean or Sharpe (ddof=1) of the rows pooled from blocks, from their sums."""
    n = n[:, None]
    mean = s1 / n
    if metric == "mean":
        return mean
    if metric != "sharpe":
        raise ConfigError(f"metric {metric!r} is unknown; use 'sharpe' or 'mean'")
    var = np.maximum((s2 - n * mean ** 2) / (n - 1), 0.0)
    sd = np.sqrt(var)
    return np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 1e-12)


# --- purged splits --------------------------------------------------------------------------

def purged_walk_forward(n_obs: int, *, n_splits: int, test_size: int | None = None,
                        purge: int = 0, min_train: int = 1,
                        max_train: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Walk-forward (train, test) index pairs: train ends ``purge`` bars before each test block.

    ``purge`` is the label horizon in bars (AFML ch. 7): a training label that ends inside the
    test block would leak it. The test blocks tile the last ``n_splits * test_size`` bars;
    ``max_train`` makes the training window roll instead of expand.
    """
    size = test_size or (n_obs - min_train - purge) // n_splits
    first = n_obs - n_splits * size
    if size < 1 or first - purge < min_train or purge < 0:
        raise ConfigError(f"{n_obs} bars cannot hold {n_splits} test blocks of {size} after a "
                          f"purge of {purge} and at least {min_train} training bars; use fewer "
                          "splits, a smaller test_size or more data")
    out = []
    for k in range(n_splits):
        start = first + k * size
        end = start - purge
        train = np.arange(0 if max_train is None else max(0, end - max_train), end)
        out.append((train, np.arange(start, start + size)))
    return out


def purged_kfold(n_obs: int, *, n_splits: int, purge: int = 0,
                 embargo: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """K-fold (train, test) pairs with a purge before and an embargo after each test fold.

    No training bar lies within ``purge`` bars before, or ``embargo`` bars after, any test bar
    (AFML ch. 7), so labels overlapping the test fold and serial correlation cannot leak.
    """
    if n_splits < 2 or n_obs < n_splits or purge < 0 or embargo < 0:
        raise ConfigError(f"purged_kfold needs 2 <= n_splits <= n_obs and non-negative purge and "
                          f"embargo; got n_obs={n_obs}, n_splits={n_splits}, purge={purge}, "
                          f"embargo={embargo}")
    idx = np.arange(n_obs)
    out = []
    for test in np.array_split(idx, n_splits):
        keep = (idx < test[0] - purge) | (idx > test[-1] + embargo)
        out.append((idx[keep], test))
    return out
