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
        with np.errstate(invalid="ignore", divide="ignore"):
            m = opens[2:] / opens[1:-1] - 1.0
        m[~np.isfinite(m) | (np.abs(m) > reject)] = np.nan
        moves[:-2] = m
    return moves


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
    moves = open_moves(opens, reject=math.inf) * 100.0
    moves = np.clip(moves, -clip_pct, clip_pct)
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
    win = np.array(win[:T], dtype=float)
    empty = ~np.isfinite(win).any(axis=2)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(win, axis=2)
    win = np.where(np.isfinite(win), win, med[..., None])
    last3 = win[..., -3:]
    feats = np.stack([win[..., -1], last3.mean(axis=2), last3.std(axis=2), win.mean(axis=2),
                      win.std(axis=2)], axis=2)
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
    """Scores entrants at step ``k`` from rewards known then; caches one model per refit step."""

    def __init__(self, config: ContestConfig, *, realise: int = REALISE) -> None:
        self.config = config
        self.realise = realise
        self._model: tuple[int, MuSigmaPredictor | None] | None = None

    def score(self, k: int, rewards: np.ndarray, *, extra: np.ndarray | None = None,
              reference: np.ndarray | None = None) -> StepScores:
        """Scores at step ``k``; ``rewards`` [>=k+1, E] (rows not yet realised are masked here),
        ``extra`` [>=k+1, E, X] features known at each step (judge scores), ``reference`` [>=k+1]
        the reference policy's rewards for centred scoring."""
        cfg = self.config
        R = known_at(rewards, k, realise=self.realise)
        E = R.shape[1]
        feats = feature_matrix(R, realise=self.realise, history=cfg.history)
        if extra is not None:
            feats = np.concatenate([feats, np.asarray(extra[: k + 1], dtype=float)], axis=2)
        now = feats[k]
        nan = np.full(E, np.nan)
        if not np.isfinite(now[:, :5]).all(axis=1).any():
            return StepScores(nan, nan, nan, _warmup(E, cfg.warmup), "warmup")
        if cfg.scoring == "centred":
            s = _centred(R, reference, k=k, realise=self.realise, cfg=cfg)
            return StepScores(s, nan, nan, allocate(s), "centred")
        model = self._fit(k, R, feats)
        if model is not None:
            mu, sigma = model.predict(np.nan_to_num(now, nan=np.nan))
            how = "lightgbm"
        else:
            mu, sigma = now[:, 3], now[:, 4]  # the mean fallback: mean5 / std5
            how = "mean"
        scores = mu / np.maximum(sigma, cfg.sigma_floor)
        scores[~np.isfinite(now[:, :5]).all(axis=1)] = np.nan
        return StepScores(scores, mu, sigma, allocate(scores), how)

    def _fit(self, k: int, R: np.ndarray, feats: np.ndarray) -> MuSigmaPredictor | None:
        """The predictor fitted at the latest refit step <= k on samples known then."""
        cfg, pc = self.config, self.config.predictor
        if pc.kind != "lightgbm":
            return None
        at = k - k % pc.refit_every
        if self._model is not None and self._model[0] == at:
            return self._model[1]
        Ra = known_at(R, at, realise=self.realise)
        X, y_mu, y_sd = training_samples(Ra, feats[: at + 1], at=at, realise=self.realise,
                                         horizon=cfg.horizon, window=cfg.window)
        model = MuSigmaPredictor.fit(X, y_mu, y_sd, config=pc) if len(X) >= pc.min_samples else None
        self._model = (at, model)
        return model


def training_samples(R: np.ndarray, feats: np.ndarray, *, at: int, realise: int, horizon: int,
                     window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features at m, mean and std of rewards m..m+horizon-1) for every m whose target is
    realised by step ``at`` (``m + horizon - 1 + realise <= at``), within the last ``window``."""
    last = at - realise - horizon + 1
    X, y_mu, y_sd = [], [], []
    for m in range(max(0, at - window), last + 1):
        target = R[m: m + horizon]  # [horizon, E]
        for e in range(R.shape[1]):
            f = feats[m, e]
            t = target[:, e]
            t = t[np.isfinite(t)]
            if t.shape[0] < 2 or not np.isfinite(f[:5]).all():
                continue
            X.append(f)
            y_mu.append(float(t.mean()))
            y_sd.append(float(t.std()))
    return (np.asarray(X, dtype=float).reshape(len(X), feats.shape[2]), np.asarray(y_mu),
            np.asarray(y_sd))


def allocate(scores: np.ndarray) -> np.ndarray:
    """weight_i = S_i / sum of positive S (S_i <= 0 or NaN -> 0); all <= 0 -> cash (zeros)."""
    s = np.where(np.isfinite(scores) & (scores > 0), scores, 0.0)
    total = s.sum()
    return s / total if total > 0 else np.zeros_like(s)


def _warmup(n: int, how: str) -> np.ndarray:
    return np.full(n, 1.0 / n) if how == "equal" and n else np.zeros(n)


def _centred(R: np.ndarray, reference: np.ndarray | None, *, k: int, realise: int,
             cfg: ContestConfig) -> np.ndarray:
    """Bounded, centred score in (-1, 1): 2 x preference_score - 1 of each entrant's annualised
    Sharpe of its recent realised rewards against the reference's (0 = level with it)."""
    lo = max(0, k - realise - cfg.centred_window + 1)
    recent = R[lo: max(lo, k - realise + 1)]
    ref = (np.asarray(reference[: k + 1], dtype=float)[lo: max(lo, k - realise + 1)]
           if reference is not None else np.zeros(recent.shape[0]))
    ref_sharpe = _sharpe(ref)
    out = np.full(R.shape[1], np.nan)
    for e in range(R.shape[1]):
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


def contest_allocations(signals: np.ndarray, opens: np.ndarray, *, config: ContestConfig,
                        realise: int = REALISE, reward: SignalReward = "signed",
                        reject: float = 0.40) -> np.ndarray:
    """[T, E] allocation at every step from whole arrays (the offline twin of the agent).

    ``realise`` < 2 lets a reward be used before the bar that realises it is visible: only a
    test should pass it, to show a leak would change the weights.
    """
    moves = open_moves(opens, reject=reject)
    R = signal_rewards(signals, moves, mode=reward)
    ref = np.where(np.isfinite(moves), moves, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            reference = np.nanmean(ref, axis=1)
    scorer = Scorer(config, realise=realise)
    return np.stack([scorer.score(k, R, reference=reference).weights
                     for k in range(signals.shape[0])])


def summary(weights: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Mean allocation per entrant (for run records)."""
    return {n: float(w) for n, w in zip(names, weights.mean(axis=0))} if weights.size else {}
