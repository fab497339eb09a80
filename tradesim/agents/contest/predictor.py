"""The contest's mu/sigma predictor: LightGBM (ContestTrade's settings), the mean as fallback."""

from __future__ import annotations

from dataclasses import dataclass
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


def lightgbm_available() -> bool:
    """True when the ``lightgbm`` package imports (``pip install 'tradesim[contest]'``)."""
    try:
        import lightgbm  # noqa: F401
    except ImportError:
        return False
    return True


class MuSigmaPredictor:
    """Two regressors over the same features: the mean and the std of the next rewards."""

    def __init__(self, mu: Any, sigma: Any) -> None:
        self._mu, self._sigma = mu, sigma

    @classmethod
    def fit(cls, X: np.ndarray, y_mu: np.ndarray, y_sigma: np.ndarray, *,
            config: PredictorConfig) -> MuSigmaPredictor | None:
        """Fit both models; None (the mean fallback) without lightgbm or with too few samples."""
        if len(X) < config.min_samples or not lightgbm_available():
            return None
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

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) per row; sigma is floored at 0 (the score floors it further)."""
        mu = np.asarray(self._mu.predict(X), dtype=float)
        sigma = np.maximum(np.asarray(self._sigma.predict(X), dtype=float), 0.0)
        return mu, sigma
