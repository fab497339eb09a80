"""A small finance sentiment lexicon for the quantitative news role.

Our own word lists in the spirit of Loughran-McDonald (financial, not general, polarity: "liability"
or "tax" are not negative here). Scores are counts of positive minus negative stems over the
matched words, with a negation flip for the word after "not", "no" or "never", and the ratings
"strong buy" / "strong sell" read as one word.
"""

from __future__ import annotations

import re


def _words(text: str) -> list[str]:
    return text.split()

POSITIVE: frozenset[str] = frozenset(_words("""
beat beats beating exceed exceeded exceeds exceeding surge surged surges soar soared soars jump
jumped jumps rally rallied rallies gain gained gains rise rose rises rising record strong stronger
strength upgrade upgraded upgrades outperform outperforms outperformed buy bullish growth grow
grows grew expand expanded expansion profit profitable profits improve improved improves
improvement boost boosted boosts raise raised raises higher optimistic positive rebound rebounded
recover recovered recovery win wins won award awarded approval approved approves breakthrough
dividend dividends overweight upside tops topped accelerate accelerated robust momentum
"""))

NEGATIVE: frozenset[str] = frozenset(_words("""
miss missed misses missing fall fell falls falling drop dropped drops plunge plunged plunges
slump slumped slumps decline declined declines declining weak weaker weakness downgrade
downgraded downgrades underperform underperforms sell bearish loss losses lose losing lost cut
cuts cutting lower lowered lowers warn warned warns warning lawsuit lawsuits probe investigation
recall recalls delay delayed delays bankruptcy default defaults layoffs layoff halt halted
concern concerns risk risks negative pessimistic slowdown shortfall tumble tumbled tumbles sink
sank sinks crash crashed fraud fine fined penalty underweight downside disappoint disappointing
disappointed disappoints volatile uncertainty
"""))

# two-word ratings whose words alone cancel out ("strong" + "sell"); scored as one hit
PHRASES: dict[str, str] = {"strong sell": "strongsell", "strong buy": "strongbuy"}
POSITIVE = POSITIVE | {"strongbuy"}
NEGATIVE = NEGATIVE | {"strongsell"}

NEGATIONS: frozenset[str] = frozenset({"not", "no", "never", "without", "n't"})
_WORD = re.compile(r"[a-z']+")


def score(text: str) -> tuple[float, float]:
    """(polarity in [-1, 1], probability-like strength in [0, 1]) of one text.

    Polarity is (pos - neg) / (pos + neg); strength is how one-sided and how dense the hits
    are: |pos - neg| / (pos + neg + 1). No hit gives (0, 0).
    """
    low = text.lower()
    for phrase, token in PHRASES.items():
        low = low.replace(phrase, token)
    words = _WORD.findall(low)
    pos = neg = 0
    flip = False
    for w in words:
        if w in NEGATIONS:
            flip = True
            continue
        hit = 1 if w in POSITIVE else -1 if w in NEGATIVE else 0
        if hit:
            if flip:
                hit = -hit
            pos, neg = pos + (hit > 0), neg + (hit < 0)
        flip = False
    total = pos + neg
    if not total:
        return 0.0, 0.0
    return (pos - neg) / total, abs(pos - neg) / (total + 1)
