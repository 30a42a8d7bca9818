"""zephyr.report.uncertainty and zephyr.report.claims on hand-made draws: the items' and the seeds' parts of a
standard error, equivalence verdicts, proportions at 1.0, and a claim judged over its rows and draws. Every
expected value is the test's own arithmetic."""

import math

import pytest
from scipy import stats

from zephyr.report import claims, findings
from zephyr.report.uncertainty import EQUAL, Measure, combine, verdict, wilson, wilson_stderr

IDS = list(range(30))


def draw(shift: float, spread: float = 0.05) -> Measure:
    """A draw whose 30 items all differ by about `shift` (the items agree)."""
    items = {i: shift + spread * ((i % 3) - 1) for i in IDS}
    mean = sum(items.values()) / len(items)
    se = math.sqrt(sum((x - mean) ** 2 for x in items.values()) / 29 / 30)
    return Measure(mean, se, 30, frozenset(IDS), items)


def t_interval(mean, se, df):
    half = stats.t.ppf(0.975, df) * se
    return mean - half, mean + half


def test_draws_that_disagree_in_sign_are_not_resolved_where_each_draw_alone_is():
    one, two, three = draw(1.0), draw(-1.0), draw(1.0)
    assert [verdict(combine([d])) for d in (one, two, three)] == ["reproduced", "contradicted", "reproduced"]
    got = combine([one, two, three])
    assert verdict(got) == "not resolved"
    # the test's arithmetic: draws +1, -1, +1 (each item's spread cancels in the mean)
    mean = 1 / 3
    s2 = ((1 - mean) ** 2 * 2 + (-1 - mean) ** 2) / 2
    per_item = [(1.0 - 1.0 + 1.0) / 3 + 0.05 * ((i % 3) - 1) for i in IDS]  # each item's mean over the draws
    m = sum(per_item) / 30
    se_items = math.sqrt(sum((x - m) ** 2 for x in per_item) / 29 / 30)
    assert got.mean == pytest.approx(mean)
    assert got.se_seeds == pytest.approx(math.sqrt(s2 / 3))
    assert got.se_items == pytest.approx(se_items)
    assert got.se == pytest.approx(math.sqrt(s2 / 3 + se_items ** 2))
    df = got.se ** 4 / ((s2 / 3) ** 2 / 2 + se_items ** 4 / 29)
    assert got.df == pytest.approx(df)
    assert (got.low, got.high) == pytest.approx(t_interval(mean, got.se, df))


def test_draws_that_agree_resolve_and_one_draw_counts_its_items_only():
    got = combine([draw(1.0), draw(1.2), draw(0.9)])
    assert verdict(got) == "reproduced" and got.seeds_measured
    single = combine([draw(0.1, spread=1.0)])
    assert not single.seeds_measured and math.isnan(single.se_seeds)
    assert single.se == pytest.approx(draw(0.1, spread=1.0).stderr) and single.df == 29


def test_items_without_per_item_differences_or_not_shared():
    # a corpus metric (BLEU) on the same items in each draw: the mean of the draws' own standard errors
    bleu = [Measure(d, se, 80, frozenset(range(80))) for d, se in ((2.0, 0.5), (3.0, 0.7), (2.5, 0.6))]
    assert combine(bleu).se_items == pytest.approx((0.5 + 0.7 + 0.6) / 3)
    # each draw's own validation records: independent errors, sqrt(sum se^2) / N
    own = [Measure(d, se, 20) for d, se in ((0.1, 0.03), (0.12, 0.04))]
    assert combine(own).se_items == pytest.approx(math.sqrt(0.03 ** 2 + 0.04 ** 2) / 2)


@pytest.mark.parametrize("shift, spread, expected", [
    (0.2, 0.5, "reproduced"),
    (6.0, 0.5, "contradicted"),
    (2.0, 8.0, "not resolved"),
])
def test_an_equality_claim_has_three_outcomes(shift, spread, expected):
    margin = 2.83
    got = combine([draw(shift, spread)])
    inside = -margin <= got.low and got.high <= margin
    outside = got.low > margin or got.high < -margin
    assert (inside, outside) == {"reproduced": (True, False), "contradicted": (False, True),
                                 "not resolved": (False, False)}[expected]
    assert verdict(got, EQUAL, margin) == expected


def test_a_proportion_of_one_keeps_an_interval():
    z = stats.norm.ppf(0.975)
    low, high = wilson(40, 40)
    assert low == pytest.approx(40 / (40 + z * z)) and high == pytest.approx(1.0)  # Wilson at k = n: n / (n + z^2)
    assert wilson_stderr(40, 40) == pytest.approx((1 - 40 / (40 + z * z)) / 2 / z)
    assert wilson_stderr(40, 40) > 0
    margin = z * math.sqrt(0.8 * 0.2 / 625)  # the report's own sampling error of 0.80 on its 625 pairs
    measured = combine([Measure(1.0 - 0.80, wilson_stderr(40, 40), 40, proportion=(40, 40))])
    # the interval is Wilson's, shifted by the report's value: it does not collapse to the point 0.20
    assert (measured.low, measured.high) == pytest.approx((low - 0.80, 0.20))
    # 40 of 40 is above 0.80 + margin even at Wilson's lower bound (0.912): the data contradict 0.80 ...
    assert verdict(measured, EQUAL, margin) == "contradicted"
    # ... where 10 of 10 (lower bound 0.72) cannot tell, and today's sqrt(p (1 - p) / n) = 0 would contradict
    few = combine([Measure(0.20, wilson_stderr(10, 10), 10, proportion=(10, 10))])
    assert few.low == pytest.approx(10 / (10 + z * z) - 0.80)
    assert verdict(few, EQUAL, margin) == "not resolved"


def test_a_verdict_without_a_finite_interval_is_not_resolved():
    assert verdict(combine([Measure(0.5, float("nan"), 10)])) == "not resolved"
    assert verdict(combine([Measure(float("nan"), 0.1, 10)])) == "not resolved"
    with pytest.raises(ValueError, match="margin"):
        verdict(combine([draw(0.1)]), EQUAL)


def row(claim, compared, measure, margin=None):
    return findings.Finding(claim, compared, "", measure, margin)


def test_claims_are_judged_by_all_their_rows_and_draws():
    claim = findings.QWEN_OVER_BLOOM
    a, b, c = ([row(claim, "BLEU-4: M0", draw(bleu)), row(claim, "ROUGE-L: M0", draw(rouge))]
               for bleu, rouge in ((1.0, 2.0), (1.1, -2.0), (0.9, 2.1)))
    rows, table = claims.tables([a, b, c])
    assert rows["compared"].tolist() == ["BLEU-4: M0", "ROUGE-L: M0"]
    assert rows["verdict"].tolist() == ["reproduced", "not resolved"]
    assert rows["draw_verdicts"].tolist() == ["reproduced; reproduced; reproduced",
                                              "reproduced; contradicted; reproduced"]
    assert rows["draw_differences"].iloc[1] == "+2; -2; +2.1"
    line = table.set_index("key").loc["qwen_over_bloom"]
    assert line["verdict"] == "not resolved" and (line["rows"], line["rows_agreeing"]) == (2, 1)
    # draw 2 alone contradicts (a contradicted row), draws 1 and 3 alone reproduce: none agrees with the whole
    assert line["draw_verdicts"] == "reproduced; contradicted; reproduced" and line["draws_agreeing"] == 0
    assert line["deciding_row"] == "ROUGE-L: M0"
    # every claim of the report has its line; one without rows says what it needs
    assert table["key"].tolist() == [c.key for c in findings.CLAIMS]
    epochs = table.set_index("key").loc["dpo_epochs"]
    assert epochs["verdict"] == "not measured" and epochs["where"] == f"needs {findings.DPO_EPOCHS.needs}"
    assert "1 not resolved" in claims.render(table)
