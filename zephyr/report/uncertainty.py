"""How sure a finding is: the items of one training run, and the seeds of several.

A *draw* trains every arm once (its seeds: LoRA initialization, data order, the mixtures' sampling); its
models are then scored on items (questions, pairs, records). A difference between two arms varies with
both, so its standard error has two parts:

- **items**: the standard error over the items of the difference averaged over the draws. Where every
  draw scores the same items (the evaluation sets never move with a draw) and the metric is a mean over
  items, each item's difference is averaged over the draws first and `mean_stderr` taken over items
  (paired by item id). A corpus metric (BLEU) on shared items has no per-item difference: the mean of the
  draws' own (paired bootstrap) standard errors is used, the value it takes when the items act alike in
  every draw, its largest. Where each draw has its own items (a validation split drawn with the
  mixture), the draws' errors are independent: sqrt(sum se_k^2) / N.
- **seeds**: the between-draw variance of the draws' differences over N (N - 1 degrees of freedom).
  With one draw it is not measured, and the verdict says so.

The two add (`se^2 = s^2 / N + se_items^2`; the item-by-seed interaction is counted in both, so the sum
errs wide), with Welch-Satterthwaite degrees of freedom (Satterthwaite 1946), and the interval is
mean +- t(0.975, df) x se, the quantile from scipy. A proportion measured once is given its Wilson
interval (scipy's `binomtest(...).proportion_ci`), which does not collapse at 0 or 1; over several draws
its Wilson half-width / z is each draw's item standard error.

With 3 draws the seed part has 2 degrees of freedom: t(0.975, 2) = 4.30, so where the seeds dominate, an
effect must be over four of its standard errors to resolve. Three draws can tell that the seeds move a
verdict (the draws disagree); they cannot estimate the seed variance well (its own relative error is ~70 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scipy import stats

from ..evaluation.metrics import mean_stderr

LEVEL = 0.95
REPRODUCED, CONTRADICTED, UNRESOLVED = "reproduced", "contradicted", "not resolved"
#: A claim that one side is above the other, and one of no change or of a value (within a margin).
ABOVE, EQUAL = "above", "equal"
#: The normal quantile of `LEVEL`'s two-sided interval.
Z = float(stats.norm.ppf(0.5 + LEVEL / 2))


@dataclass(frozen=True)
class Measure:
    """One draw's measurement of a difference. `ids`: the items it was measured on, when they are the same
    items in every draw (None: this draw's own items); `items`: each item's difference by id, when the
    metric is a mean over items; `proportion`: (k, n) when the difference is a proportion k / n less a value."""

    difference: float
    stderr: float
    n: int
    ids: frozenset | None = None
    items: dict = field(default=None, hash=False, compare=False)
    proportion: tuple[int, int] | None = None


@dataclass(frozen=True)
class Estimate:
    mean: float
    draws: tuple[float, ...]
    se_items: float
    se_seeds: float
    se: float
    df: float
    low: float
    high: float

    @property
    def seeds_measured(self) -> bool:
        return len(self.draws) > 1


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval of k / n at `LEVEL`."""
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=LEVEL, method="wilson")
    return float(ci.low), float(ci.high)


def wilson_stderr(k: int, n: int) -> float:
    """The Wilson interval's half-width over z: a proportion's standard error that stays above 0 at 0 and 1."""
    low, high = wilson(k, n)
    return (high - low) / 2 / Z


def combine(measures: list[Measure]) -> Estimate:
    """The draws' measurements of one difference, their mean and its standard error from items and seeds."""
    if not measures:
        raise ValueError("no draw to combine")
    n_draws = len(measures)
    draws = tuple(m.difference for m in measures)
    mean = sum(draws) / n_draws
    se_items, df_items = _items(measures)
    if n_draws > 1:
        s2 = sum((d - mean) ** 2 for d in draws) / (n_draws - 1)
        se_seeds = math.sqrt(s2 / n_draws)
    else:
        se_seeds = float("nan")
    seeds = se_seeds if n_draws > 1 else 0.0
    se = math.hypot(seeds, se_items)
    if n_draws == 1 and measures[0].proportion is not None:
        k, n = measures[0].proportion
        offset = measures[0].difference - k / n
        low, high = (x + offset for x in wilson(k, n))
        return Estimate(mean, draws, se_items, se_seeds, se, float(n - 1), low, high)
    parts = [(seeds, n_draws - 1)] if n_draws > 1 else []
    parts.append((se_items, df_items))
    denominator = sum(s ** 4 / d for s, d in parts if s > 0 and d > 0)
    df = se ** 4 / denominator if denominator > 0 else float("nan")
    if se == 0:
        low = high = mean
    else:
        half = stats.t.ppf(0.5 + LEVEL / 2, df) * se if math.isfinite(df) else float("nan")
        low, high = mean - half, mean + half
    return Estimate(mean, draws, se_items, se_seeds, se, df, low, high)


def _items(measures: list[Measure]) -> tuple[float, float]:
    """The items' standard error of the draws' mean difference, and its degrees of freedom."""
    n_draws = len(measures)
    ses = [wilson_stderr(*m.proportion) if m.proportion is not None else m.stderr for m in measures]
    shared = all(m.ids is not None for m in measures) and len({m.ids for m in measures}) == 1
    if shared and all(m.items is not None for m in measures):
        ids = sorted(measures[0].ids, key=str)
        per_item = [sum(m.items[i] for m in measures) / n_draws for i in ids]
        return mean_stderr(per_item), float(len(per_item) - 1)
    if shared:
        return sum(ses) / n_draws, float(min(m.n for m in measures) - 1)
    se = math.sqrt(sum(s * s for s in ses)) / n_draws
    denominator = sum((s / n_draws) ** 4 / (m.n - 1) for s, m in zip(ses, measures) if m.n > 1)
    return se, (se ** 4 / denominator if denominator > 0 else float("nan"))


def verdict(estimate: Estimate, kind: str = ABOVE, margin: float | None = None) -> str:
    """`ABOVE`: reproduced when the interval lies above 0, contradicted when below, else not resolved.
    `EQUAL` (an equivalence test against +-margin, the interval two one-sided tests at 2.5 % each): reproduced
    when the interval lies inside the margin, contradicted when wholly outside it, else not resolved."""
    low, high = estimate.low, estimate.high
    if not (math.isfinite(low) and math.isfinite(high)):
        return UNRESOLVED
    if kind == EQUAL:
        if margin is None or not math.isfinite(margin):
            raise ValueError("an equality claim needs its margin")
        if -margin <= low and high <= margin:
            return REPRODUCED
        return CONTRADICTED if low > margin or high < -margin else UNRESOLVED
    return REPRODUCED if low > 0 else CONTRADICTED if high < 0 else UNRESOLVED
