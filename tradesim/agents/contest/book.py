"""The contest's books: realised rewards, lag-safe features, scores and the allocation.

Everything here is a pure function of arrays indexed by decision step ``j`` (the bar a signal was
decided at). A signal decided after bar ``j`` fills at the open of ``j+1``; its reward is the
open-to-open move ``open[j+1] -> open[j+2]`` in its direction, which is known once bar ``j+2`` is
visible: at decision step ``j + realise`` with ``realise = 2``. Scores at step ``k`` use only
rewards with ``j + realise <= k``; :func:`contest_allocations` takes ``realise`` so a test can show
that realising one bar earlier (a leak) changes the weights.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tradesim.agents.contest.predictor import MuSigmaPredictor, PredictorConfig
from tradesim.rewards.metrics import TRADING_DAYS
from tradesim.rewards.scores import preference_score

REALISE = 2  # steps from a decision until its open-to-open reward is visible
SignalReward = Literal["signed", "positive_only"]
Scoring = Literal["sharpe", "centred"]


def open_moves(opens: np.ndarray, *, reject: float = 0.40) -> np.ndarray:
    """[T, N] move of decision ``j``: ``open[j+2]/open[j+1]-1`` (NaN when unknown or |move| > reject)."""
    moves = np.full(opens.shape, np.nan)
    if opens.shape[0] >= 3:
        moves[:-2] = move_between(opens[1:-1], opens[2:], reject=reject)
    return moves


def move_between(before: np.ndarray, after: np.ndarray, *, reject: float = 0.40) -> np.ndarray:
    """``after/before - 1`` element-wise; NaN where not finite or ``|move| > reject``.

    At step ``k`` the move of decision ``k-2`` is ``move_between(open[k-1], open[k])``: the one
    row the contest learns per step (the agent's incremental path and :func:`open_moves` share it).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.asarray(after, dtype=float) / np.asarray(before, dtype=float) - 1.0
    m = np.atleast_1d(m)
    m[~np.isfinite(m) | (np.abs(m) > reject)] = np.nan
    return m


def signal_rewards(signals: np.ndarray, moves: np.ndarray, *,
                   mode: SignalReward = "signed") -> np.ndarray:
    """[T, E] reward of each entrant's signal (weights [T, E, N]) in its direction.

    ``positive_only`` counts long weights alone (ContestTrade's rule for factor ratings: an
    entrant that never sells loses nothing by its sells). NaN where no symbol's move is known.
    """
    w = np.maximum(signals, 0.0) if mode == "positive_only" else signals
    known = np.isfinite(moves)
    out = np.einsum("ten,tn->te", w, np.where(known, moves, 0.0))
    out[~known.any(axis=1)] = np.nan
    return out


def factor_rewards(ratings: np.ndarray, opens: np.ndarray, *, mode: SignalReward = "positive_only",
                   clip_pct: float = 20.0) -> np.ndarray:
    """[T, F] data-contest reward of ratings [T, F, N] in {-2..2} on moves in percent (clipped).

    ContestTrade: ``sum_{r>0} r * move / rated symbols with a price``; ``signed`` counts every
    rating (a "sell" on a riser costs), which is the centred alternative.
    """
    moves = np.clip(open_moves(opens, reject=math.inf) * 100.0, -clip_pct, clip_pct)
    return factor_reward_rows(ratings, moves, mode=mode)


def factor_reward_rows(ratings: np.ndarray, moves: np.ndarray, *,
                       mode: SignalReward = "positive_only") -> np.ndarray:
    """[T, F] factor rewards of ratings [T, F, N] on clipped moves in percent [T, N]."""
    known = np.isfinite(moves)[:, None, :]
    rated = (ratings != 0) & known
    r = np.where(ratings > 0, ratings, 0.0) if mode == "positive_only" else ratings
    total = np.where(rated, r * np.nan_to_num(moves)[:, None, :], 0.0).sum(axis=2)
    n = rated.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    out[~np.isfinite(moves).any(axis=1)] = np.nan
    return out


def known_at(rewards: np.ndarray, k: int, *, realise: int = REALISE) -> np.ndarray:
    """``rewards`` as known at decision step ``k``: rows ``j > k - realise`` masked to NaN."""
    out = np.array(rewards[: k + 1], dtype=float, copy=True)
    cut = max(0, k - realise + 1)
    out[cut:] = np.nan
    return out


def feature_matrix(rewards: np.ndarray, *, realise: int = REALISE, history: int = 5) -> np.ndarray:
    """[T, E, 5] features at each step ``m`` from the ``history`` latest rewards realised by ``m``.

    mean1, mean3, std3, mean5, std5 over trading steps ``m-realise-history+1 .. m-realise``; a
    missing day takes the window's median; an all-missing window gives NaN features.
    """
    T, E = rewards.shape
    pad = np.full((realise + history - 1, E), np.nan)
    padded = np.concatenate([pad, rewards], axis=0)[: T + history - 1]
    win = sliding_window_view(padded, history, axis=0)  # [T, E, history]
    return window_features(np.array(win[:T], dtype=float))


def window_features(win: np.ndarray) -> np.ndarray:
    """[..., 5] mean1, mean3, std3, mean5, std5 of reward windows [..., history] (oldest first);
    a missing reward takes its window's median, an all-missing window gives NaN."""
    win = np.array(win, dtype=float)
    finite = np.isfinite(win)
    empty = ~finite.any(axis=-1)
    if not finite.all():  # the median fills gaps only: skip it when there are none
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(win, axis=-1)
        win = np.where(finite, win, med[..., None])
    last3 = win[..., -3:]
    feats = np.stack([win[..., -1], last3.mean(axis=-1), last3.std(axis=-1), win.mean(axis=-1),
                      win.std(axis=-1)], axis=-1)
    feats[empty] = np.nan
    return feats


@dataclass(frozen=True)
class ContestConfig:
    """How entrants are scored and weighted (defaults from ContestTrade at 79249b5)."""

    predictor: PredictorConfig = PredictorConfig()
    scoring: Scoring = "sharpe"
    history: int = 5
    horizon: int = 5  # rewards per training target (mean and std of the next ``horizon``)
    window: int = 180  # trading steps of training samples
    sigma_floor: float = 0.01
    centred_window: int = 20  # realised rewards behind a centred score
    centred_scale: float = 0.5  # annualised Sharpe difference per sigmoid unit
    warmup: Literal["equal", "cash"] = "equal"


@dataclass(frozen=True)
class StepScores:
    """One step's contest outcome: score, mu and sigma per entrant, and the allocation."""

    scores: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    weights: np.ndarray
    how: str  # lightgbm | mean | centred | warmup


class Scorer:
    """Scores entrants step by step from rewards known then, incrementally.

    Each step ``m`` it reads one reward row (``m - realise``, realised at ``m``) and one row of
    extra features, and keeps every step's features: a score costs O(history), a refit
    O(window), never the whole history. Steps must increase; a gap is caught up row by row, so
    a fresh scorer given the stored rows (after ``load_state``) reaches the same numbers.
    """

    def __init__(self, config: ContestConfig, *, realise: int = REALISE,
                 entrants: int | None = None) -> None:
        self.config = config
        self.realise = realise
        self.entrants = entrants  # needed only when scoring starts before any reward row exists
        self._model: tuple[int, MuSigmaPredictor | None] | None = None
        self._R: list[np.ndarray] = []  # reward rows j = 0 .. step - realise
        self._ref: list[float] = []  # the reference policy's reward per row j (centred)
        self._F: list[np.ndarray] = []  # features [E, 5 + X] at every step 0 .. step
        self._k = -1

    def score(self, k: int, rewards: Sequence[Any] | np.ndarray, *,
              extra: Sequence[Any] | np.ndarray | None = None,
              reference: Sequence[float] | np.ndarray | None = None) -> StepScores:
        """Scores at step ``k``. ``rewards[j]`` is read only for ``j <= k - realise`` (later rows
        may be absent or anything); ``extra[m]`` [E, X] are features known at step ``m`` (judge
        scores); ``reference[j]`` the reference policy's reward of row ``j`` (centred scoring)."""
        if k <= self._k:
            raise ValueError(f"contest scorer: step {k} after step {self._k}; steps must increase")
        for m in range(self._k + 1, k + 1):
            self._advance(m, rewards, extra, reference)
        cfg = self.config
        now = self._F[k]
        E = now.shape[0]
        nan = np.full(E, np.nan)
        if not np.isfinite(now[:, :5]).all(axis=1).any():
            return StepScores(nan, nan, nan, _warmup(E, cfg.warmup), "warmup")
        if cfg.scoring == "centred":
            lo = max(0, k - self.realise - cfg.centred_window + 1)
            recent = np.asarray(self._R[lo:], dtype=float).reshape(-1, E)
            ref = (np.asarray(self._ref[lo:], dtype=float) if reference is not None
                   else np.zeros(recent.shape[0]))
            s = centred_scores(recent, ref, cfg=cfg)
            return StepScores(s, nan, nan, allocate(s), "centred")
        model = self._fit(k)
        if model is not None:
            mu, sigma = model.predict(now)
            how = "lightgbm"
        else:
            mu, sigma = now[:, 3], now[:, 4]  # the mean fallback: mean5 / std5
            how = "mean"
        scores = mu / np.maximum(sigma, cfg.sigma_floor)
        scores[~np.isfinite(now[:, :5]).all(axis=1)] = np.nan
        return StepScores(scores, mu, sigma, allocate(scores), how)

    def _advance(self, m: int, rewards: Sequence[Any] | np.ndarray,
                 extra: Sequence[Any] | np.ndarray | None,
                 reference: Sequence[float] | np.ndarray | None) -> None:
        """Step ``m``: take reward row ``m - realise`` (now realised), then the features at m."""
        j = m - self.realise
        if j >= 0:
            self._R.append(np.asarray(rewards[j], dtype=float).reshape(-1))
            self._ref.append(float(reference[j]) if reference is not None else 0.0)
        h = self.config.history
        E = self._width(rewards)
        win = np.full((E, h), np.nan)
        last = self._R[max(0, len(self._R) - h):]
        if last:
            win[:, h - len(last):] = np.asarray(last, dtype=float).T
        feats = window_features(win)
        if extra is not None:
            feats = np.concatenate([feats, np.asarray(extra[m], dtype=float).reshape(E, -1)],
                                   axis=1)
        self._F.append(feats)
        self._k = m

    def _width(self, rewards: Sequence[Any] | np.ndarray) -> int:
        if self._R:
            return int(self._R[0].shape[0])
        if len(rewards):
            return int(np.asarray(rewards[0], dtype=float).reshape(-1).shape[0])
        if self.entrants is None:
            raise ValueError("contest scorer: no reward row yet; pass entrants= to Scorer")
        return self.entrants

    def _fit(self, k: int) -> MuSigmaPredictor | None:
        """The predictor fitted at the latest refit step <= k on samples known then."""
        cfg, pc = self.config, self.config.predictor
        if pc.kind != "lightgbm":
            return None
        at = k - k % pc.refit_every
        if self._model is not None and self._model[0] == at:
            return self._model[1]
        lo, last = max(0, at - cfg.window), at - self.realise - cfg.horizon + 1
        if last < lo:
            model = None
        else:
            R = np.asarray(self._R[lo: last + cfg.horizon], dtype=float)
            F = np.asarray(self._F[lo: last + 1], dtype=float)
            X, y_mu, y_sd = _samples(R, F, horizon=cfg.horizon)
            model = (MuSigmaPredictor.fit(X, y_mu, y_sd, config=pc)
                     if len(X) >= pc.min_samples else None)
        self._model = (at, model)
        return model


def training_samples(R: np.ndarray, feats: np.ndarray, *, at: int, realise: int, horizon: int,
                     window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features at m, mean and std of rewards m..m+horizon-1) for every m whose target is
    realised by step ``at`` (``m + horizon - 1 + realise <= at``), within the last ``window``."""
    lo, last = max(0, at - window), at - realise - horizon + 1
    if last < lo:
        return np.zeros((0, feats.shape[2])), np.zeros(0), np.zeros(0)
    return _samples(np.asarray(R[lo: last + horizon], dtype=float),
                    np.asarray(feats[lo: last + 1], dtype=float), horizon=horizon)


def _samples(R: np.ndarray, F: np.ndarray, *, horizon: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples from reward rows ``R`` and the features ``F`` [M, E, X] of the first M of them,
    ordered by step then entrant; a target needs two finite rewards and the base features."""
    M, E = F.shape[0], F.shape[1]
    if M == 0:
        return np.zeros((0, F.shape[2])), np.zeros(0), np.zeros(0)
    # targets [M, E, horizon], the horizon contiguous so each reduction matches a 1-D one
    T = np.ascontiguousarray(sliding_window_view(R, horizon, axis=0)[:M])
    finite = np.isfinite(T)
    ok = (finite.sum(axis=2) >= 2) & np.isfinite(F[..., :5]).all(axis=2)
    full = finite.all(axis=2)
    y_mu, y_sd = np.full((M, E), np.nan), np.full((M, E), np.nan)
    with np.errstate(all="ignore"):
        y_mu[full] = T[full].mean(axis=1)
        y_sd[full] = T[full].std(axis=1)
    for m, e in zip(*np.nonzero(ok & ~full)):  # a gap in the target: its finite rewards only
        t = T[m, e][finite[m, e]]
        y_mu[m, e], y_sd[m, e] = float(t.mean()), float(t.std())
    return (np.asarray(F[ok], dtype=float).reshape(-1, F.shape[2]), y_mu[ok], y_sd[ok])


def allocate(scores: np.ndarray) -> np.ndarray:
    """weight_i = S_i / sum of positive S (S_i <= 0 or NaN -> 0); all <= 0 -> cash (zeros)."""
    s = np.where(np.isfinite(scores) & (scores > 0), scores, 0.0)
    total = s.sum()
    return s / total if total > 0 else np.zeros_like(s)


def _warmup(n: int, how: str) -> np.ndarray:
    return np.full(n, 1.0 / n) if how == "equal" and n else np.zeros(n)


def centred_scores(recent: np.ndarray, ref: np.ndarray, *, cfg: ContestConfig) -> np.ndarray:
    """Bounded, centred score in (-1, 1): 2 x preference_score - 1 of each entrant's annualised
    Sharpe of its recent realised rewards [W, E] against the reference's [W] (0 = level)."""
    ref_sharpe = _sharpe(ref)
    out = np.full(recent.shape[1], np.nan)
    for e in range(recent.shape[1]):
        sh = _sharpe(recent[:, e])
        if math.isfinite(sh):
            pref = preference_score(value=sh, references={"reference": ref_sharpe if
                                                          math.isfinite(ref_sharpe) else 0.0},
                                    scale=cfg.centred_scale)
            out[e] = 2.0 * pref - 1.0
    return out


def _sharpe(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    if x.shape[0] < 2:
        return math.nan
    sd = float(x.std())
    return float(x.mean() / sd * math.sqrt(TRADING_DAYS)) if sd > 0 else 0.0


def reference_rewards(moves: np.ndarray) -> np.ndarray:
    """The reference policy's reward per row: holding the universe equally (mean known move)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.atleast_2d(moves), axis=1)


def contest_allocations(signals: np.ndarray, opens: np.ndarray, *, config: ContestConfig,
                        realise: int = REALISE, reward: SignalReward = "signed",
                        reject: float = 0.40) -> np.ndarray:
    """[T, E] allocation at every step from whole arrays (the offline twin of the agent).

    ``realise`` < 2 lets a reward be used before the bar that realises it is visible: only a
    test should pass it, to show a leak would change the weights.
    """
    moves = open_moves(opens, reject=reject)
    R = signal_rewards(signals, moves, mode=reward)
    reference = reference_rewards(moves)
    scorer = Scorer(config, realise=realise)
    return np.stack([scorer.score(k, R, reference=reference).weights
                     for k in range(signals.shape[0])])


def summary(weights: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Mean allocation per entrant (for run records)."""
    return {n: float(w) for n, w in zip(names, weights.mean(axis=0))} if weights.size else {}
