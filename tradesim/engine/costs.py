"""Transaction-cost model: commission, half-spread, slippage with square-root impact, borrow fee.

Costs are cash amounts charged on ``|Δposition|`` (never on the signed position) and kept apart
from the fill price, so every fill price stays inside the bar's low..high. This module declares
the model; its arithmetic is the compiled account core's (:func:`tradesim.engine.core.fill_charges`,
:func:`~tradesim.engine.core.affordable`, :func:`~tradesim.engine.core.borrow_fee`), which the
event loop, the fast path and the RL env all call.

Market impact follows the square-root law in the form of Almgren, Thum, Hauptmann & Li (2005,
"Direct estimation of equity market impact", Risk 18(7)) and Tóth, Lemperière, Deremble et al.
(2011, "Anomalous price impact and the critical nature of liquidity in financial markets",
Phys. Rev. X 1, 021006)::

    impact (fraction of notional) = Y * sigma_daily * sqrt(Q / V_daily)

with Y of order one (Tóth et al. report Y ~ 0.5-1 across markets). The engine knows one bar at a
fill, so V_daily is estimated from the fill bar as ``volume x bars_per_day`` and ``sigma_daily`` is
a stated constant of the model (``impact_sigma``, 2% a day by default: a typical large-cap
stock). ``bars_per_day`` is set in the model or inferred from the bar spacing as
``max(1, 23,400 s / smallest gap between bars seen so far)`` (a 6.5-hour equity session: 390
one-minute bars, 1 for daily bars; set it for round-the-clock markets, e.g. 1,440 for minute
bars of a 24/7 exchange). Worked figures with the default (Y = 1, sigma = 2%): 1% of a day's
volume costs 20 bps; a fill of 10% of one minute bar's volume costs 0.02 x sqrt(0.1 / 390) =
3.2 bps (the former ``0.1 x sqrt(participation)`` charged 316 bps for it).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tradesim.errors import ConfigError


class CostModel(BaseModel):
    """What a trade costs; all rates in basis points of traded notional unless named otherwise.

    ``participation_cap`` limits a fill to that fraction of the bar's volume; the rest of the
    order **keeps working** on the following bars (whole lots each bar) until it is filled, the
    agent replaces it with a new weight for that symbol, or the run ends (then a
    ``target_unreached`` event names it). With a cap set, a bar with zero volume fills nothing.
    An order the account cannot pay for at the fill price is shrunk and its rest cancelled
    (``order_shrunk``): cash, unlike liquidity, does not come back by waiting.
    Impact: ``impact_y x impact_sigma x sqrt(qty / (bar volume x bars_per_day))`` of notional
    (the square-root law; see the module docstring).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    commission_fixed: float = Field(0.0, ge=0, description="cash per order fill")
    commission_bps: float = Field(0.0, ge=0)
    half_spread_bps: float = Field(0.0, ge=0)
    slippage_bps: float = Field(0.0, ge=0)
    impact_y: float = Field(0.0, ge=0, description="Y of the square-root law: impact = Y x "
                            "sigma x sqrt(qty / daily volume)")
    impact_sigma: float = Field(0.02, gt=0, description="daily volatility the impact assumes")
    bars_per_day: float | None = Field(None, gt=0, description="bars in a trading day, for the "
                                       "daily volume (None: inferred from the bar spacing)")
    participation_cap: float | None = Field(None, gt=0, le=1)
    borrow_bps_annual: float = Field(0.0, ge=0, description="fee on short market value, per year")

    @model_validator(mode="before")
    @classmethod
    def _former_impact(cls, data: Any) -> Any:
        """``impact_coef`` (the former ``coef x sqrt(qty / bar volume)``, kept in old run records
        and checkpoints) becomes the same cost in the new form: ``impact_y = coef / sigma`` with
        one bar per day. New configs should set ``impact_y`` (about 0.5-1) instead."""
        if isinstance(data, Mapping) and "impact_coef" in data:
            data = dict(data)
            coef = float(data.pop("impact_coef") or 0.0)
            if coef:
                sigma = float(data.get("impact_sigma") or 0.02)
                data.update(impact_y=coef / sigma, impact_sigma=sigma, bars_per_day=1.0)
        return data

    @property
    def impact_scale(self) -> float:
        """``impact_y x impact_sigma``: the impact cost fraction at a whole day's volume."""
        return self.impact_y * self.impact_sigma

    @classmethod
    def preset(cls, name: str) -> CostModel:
        """One of the named presets (``zero``, ``default``, ``retail``)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown cost preset {name!r}; use one of {', '.join(PRESETS)} "
                              "or the path of a TOML file") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> CostModel:
        """Load from TOML: either the fields, or ``preset = "name"`` plus fields to override."""
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cost file {p}: {exc}") from exc
        return load_costs(raw.get("costs", raw), where=str(p))

    @property
    def is_zero(self) -> bool:
        return not any((self.commission_fixed, self.commission_bps, self.half_spread_bps,
                        self.slippage_bps, self.impact_y, self.borrow_bps_annual))

    def describe(self) -> str:
        """The model in one line (the run report's header states it)."""
        parts = [f"commission {self.commission_bps:g} bps"
                 + (f" + {self.commission_fixed:g} per fill" if self.commission_fixed else ""),
                 f"half-spread {self.half_spread_bps:g} bps", f"slippage {self.slippage_bps:g} bps"]
        if self.impact_y:
            bpd = "inferred from bar spacing" if self.bars_per_day is None else f"{self.bars_per_day:g}"
            parts.append(f"impact {self.impact_y:g} x {self.impact_sigma:g} x sqrt(qty / (bar "
                         f"volume x bars/day)), bars/day {bpd} (square-root law, Almgren et al. "
                         "2005; Tóth et al. 2011)")
        else:
            parts.append("no impact")
        parts.append("participation cap " + ("none" if self.participation_cap is None else
                                             f"{self.participation_cap:g} of bar volume, rest "
                                             "keeps working"))
        if self.borrow_bps_annual:
            parts.append(f"borrow {self.borrow_bps_annual:g} bps/yr")
        return "; ".join(parts)


PRESETS: dict[str, CostModel] = {
    "zero": CostModel(),
    "default": CostModel(commission_bps=1.0, half_spread_bps=1.0, slippage_bps=1.0,
                         impact_y=1.0, participation_cap=0.1, borrow_bps_annual=50.0),
    "retail": CostModel(commission_fixed=1.0, half_spread_bps=2.0, slippage_bps=2.0,
                        impact_y=1.0, participation_cap=0.05, borrow_bps_annual=300.0),
}


def load_costs(spec: str | Path | Mapping | CostModel | None, *, where: str = "costs") -> CostModel:
    """A cost model from a preset name, a TOML path, a mapping (``preset`` + overrides) or a model."""
    if spec is None:
        return PRESETS["default"]
    if isinstance(spec, CostModel):
        return spec
    if isinstance(spec, Mapping):
        fields = dict(spec)
        base = CostModel.preset(str(fields.pop("preset"))) if "preset" in fields else CostModel()
        try:
            return CostModel.model_validate({**base.model_dump(), **fields})
        except ValidationError as exc:
            raise ConfigError(f"{where}: invalid cost settings: {exc}") from exc
    text = str(spec)
    if text in PRESETS:
        return PRESETS[text]
    if text.endswith(".toml") or Path(text).is_file():
        return CostModel.from_toml(text)
    return CostModel.preset(text)
