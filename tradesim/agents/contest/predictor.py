"""The contest's mu/sigma predictor: LightGBM (ContestTrade's settings), the mean as fallback."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class PredictorConfig:
    """LightGBM settings (100 trees, lr 0.1, depth 6, 31 leaves, seed 42, >= 10 samples)."""

    kind: Literal["lightgbm", "mean"] = "lightgbm"
    n_estimators: int = 100
    learning_rate: float = 0.1
    max_depth: int = 6
    num_leaves: int = 31
    seed: int = 42
    min_samples: int = 10
    refit_every: int = 5  # steps between refits (each refit sees only what was realised then)


_AVAILABLE: list[bool] = []


def lightgbm_available() -> bool:
    """True when the ``lightgbm`` package imports (``pip install 'tradesim[contest]'``)."""
    if not _AVAILABLE:
        try:
            import lightgbm  # noqa: F401
        except ImportError:
            _AVAILABLE.append(False)
        else:
            _AVAILABLE.append(True)
    return _AVAILABLE[0]


_FITS: OrderedDict[str, MuSigmaPredictor] = OrderedDict()  # identical inputs, identical model
_FITS_MAX = 512
_FITS_LOCK = threading.Lock()


def _fit_key(X: np.ndarray, y_mu: np.ndarray, y_sigma: np.ndarray,
             config: PredictorConfig) -> str:
    h = hashlib.sha1(repr(sorted(asdict(config).items())).encode())
    for a in (X, y_mu, y_sigma):
        a = np.ascontiguousarray(a, dtype=float)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class MuSigmaPredictor:
    """Two regressors over the same features: the mean and the std of the next rewards."""

    def __init__(self, mu: Any, sigma: Any) -> None:
        self._mu, self._sigma = mu, sigma

    @classmethod
    def fit(cls, X: np.ndarray, y_mu: np.ndarray, y_sigma: np.ndarray, *,
            config: PredictorConfig) -> MuSigmaPredictor | None:
        """Fit both models; None (the mean fallback) without lightgbm or with too few samples.

        LightGBM here is deterministic (one thread, fixed seed), so a fit of byte-identical
        samples is reused from a small in-process cache: a counterfactual twin, a resumed run or
        a repeated seed refits nothing it has fitted before.
        """
        if len(X) < config.min_samples or not lightgbm_available():
            return None
        key = _fit_key(X, y_mu, y_sigma, config)
        with _FITS_LOCK:
            if key in _FITS:
                _FITS.move_to_end(key)
                return _FITS[key]
        fitted = cls._fit(X, y_mu, y_sigma, config=config)
        with _FITS_LOCK:
            _FITS[key] = fitted
            while len(_FITS) > _FITS_MAX:
                _FITS.popitem(last=False)
        return fitted

    @classmethod
    def _fit(cls, X: np.ndarray, y_mu: np.ndarray, y_sigma: np.ndarray, *,
             config: PredictorConfig) -> MuSigmaPredictor:
        import lightgbm as lgb

        def model() -> Any:
            return lgb.LGBMRegressor(n_estimators=config.n_estimators,
                                     learning_rate=config.learning_rate,
                                     max_depth=config.max_depth, num_leaves=config.num_leaves,
                                     random_state=config.seed, n_jobs=1, verbose=-1,
                                     deterministic=True, force_row_wise=True,
                                     min_child_samples=min(20, max(2, len(X) // 5)))
        mu, sigma = model(), model()
        mu.fit(X, y_mu)
        sigma.fit(X, y_sigma)
        return cls(mu, sigma)

    @staticmethod
    def _booster(model: Any) -> Any:
        """The fitted booster: what the sklearn wrapper's predict calls, minus its checks."""
        return getattr(model, "booster_", model)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) per row; sigma is floored at 0 (the score floors it further)."""
        mu = np.asarray(self._booster(self._mu).predict(X, num_threads=1), dtype=float)
        sigma = np.maximum(np.asarray(self._booster(self._sigma).predict(X, num_threads=1),
                                      dtype=float), 0.0)
        return mu, sigma
