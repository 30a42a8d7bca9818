"""The report's claims judged over every draw of a study: each row over the draws, then each claim once.

`claim_rows.csv` holds every row of `findings` (one comparison) over the draws: each draw's difference, their
mean, its standard error from items and seeds (`uncertainty.combine`), the interval and the verdict.
`claims.csv` holds each claim of `findings.CLAIMS` once, in the report's words with its place: its verdict
from its rows (all reproduced: reproduced; any contradicted: contradicted; else not resolved; no row:
not measured, with what the study would need), how many of its rows and of the draws agree with it, and
its deciding row's interval. The same row is matched across draws by claim and comparison.
"""

from __future__ import annotations

import math

import pandas as pd

from .findings import CLAIMS, Finding, judged
from .uncertainty import CONTRADICTED, REPRODUCED, UNRESOLVED, Estimate

NOT_MEASURED = "not measured"
ROW_COLUMNS = ["key", "claim", "place", "compared", "draws", "draw_differences", "difference", "stderr_items",
               "stderr_seeds", "stderr", "df", "low", "high", "margin", "n", "verdict", "draw_verdicts",
               "seed_variance"]
CLAIM_COLUMNS = ["key", "claim", "place", "verdict", "rows", "rows_agreeing", "draws", "draws_agreeing",
                 "draw_verdicts", "deciding_row", "difference", "low", "high", "seed_variance", "reading",
                 "margin_source", "where"]


def _key(row: Finding) -> tuple[str, str]:
    return row.claim.key, row.compared


def over_draws(draws: list[list[Finding]]) -> list[tuple[Finding, list[Finding]]]:
    """Each row of any draw with the same row of every draw that has it, in draw 1's order."""
    found: dict[tuple[str, str], list[Finding]] = {}
    for rows in draws:
        for row in rows:
            found.setdefault(_key(row), []).append(row)
    return [(same[0], same) for same in found.values()]


def _rule(verdicts: list[str]) -> str:
    if not verdicts:
        return NOT_MEASURED
    return CONTRADICTED if CONTRADICTED in verdicts else REPRODUCED if set(verdicts) == {REPRODUCED} else UNRESOLVED


def _seeds(estimate: Estimate) -> str:
    n = len(estimate.draws)
    if n == 1:
        return "not measured (one draw)"
    return f"measured over {n} draws (stderr {estimate.se_seeds:.4g})"


def _strength(estimate: Estimate) -> float:
    return abs(estimate.mean) / estimate.se if estimate.se and math.isfinite(estimate.se) else math.inf


def tables(draws: list[list[Finding]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(claim rows over the draws, claims): `draws` holds each draw's `findings`, draw 1 first."""
    judged_rows = []
    for row, same in over_draws(draws):
        estimate, got = judged(row, same)
        singles = [judged(d)[1] for d in same]
        judged_rows.append((row, same, estimate, got, singles))
    rows = pd.DataFrame([{
        "key": row.claim.key, "claim": row.claim.text, "place": row.claim.place, "compared": row.compared,
        "draws": len(same), "draw_differences": "; ".join(f"{d:+.4g}" for d in estimate.draws),
        "difference": round(estimate.mean, 6), "stderr_items": round(estimate.se_items, 6),
        "stderr_seeds": round(estimate.se_seeds, 6), "stderr": round(estimate.se, 6), "df": round(estimate.df, 1),
        "low": round(estimate.low, 6), "high": round(estimate.high, 6), "margin": row.margin,
        "n": row.measure.n, "verdict": got, "draw_verdicts": "; ".join(singles), "seed_variance": _seeds(estimate),
    } for row, same, estimate, got, singles in judged_rows], columns=ROW_COLUMNS)
    claims = []
    for claim in CLAIMS:
        mine = [r for r in judged_rows if r[0].claim.key == claim.key]
        verdict = _rule([r[3] for r in mine])
        per_draw = [_rule([judged(d)[1] for d in rows_k if d.claim.key == claim.key]) for rows_k in draws]
        line = {"key": claim.key, "claim": claim.text, "place": claim.place, "verdict": verdict, "rows": len(mine),
                "rows_agreeing": sum(r[3] == verdict for r in mine), "draws": len(draws),
                "draws_agreeing": sum(v == verdict for v in per_draw), "draw_verdicts": "; ".join(per_draw),
                "reading": claim.reading, "margin_source": claim.margin_source,
                "where": f"claim_rows.csv, key {claim.key}" if mine else f"needs {claim.needs}"}
        if mine:
            agreeing = [r for r in mine if r[3] == verdict] or mine
            pick = max if verdict == CONTRADICTED else min
            row, _, estimate, _, _ = pick(agreeing, key=lambda r: _strength(r[2]))
            line.update(deciding_row=row.compared, difference=round(estimate.mean, 6), low=round(estimate.low, 6),
                        high=round(estimate.high, 6), seed_variance=_seeds(estimate))
        else:
            line.update(deciding_row="", difference=None, low=None, high=None, seed_variance="")
        claims.append(line)
    return rows, pd.DataFrame(claims, columns=CLAIM_COLUMNS)


def render(claims: pd.DataFrame) -> str:
    """The claims table as `make check-default` prints it: one line per claim."""
    out = []
    for c in claims.itertuples():
        agree = "" if c.verdict == NOT_MEASURED else \
            f"  [{c.rows_agreeing}/{c.rows} rows, {c.draws_agreeing}/{c.draws} draws]"
        out.append(f"{c.verdict:<13} \"{c.claim}\" ({c.place}){agree}")
        if c.verdict != NOT_MEASURED:
            out.append(f"{'':<14}deciding row {c.deciding_row}: {c.difference:+.4g} [{c.low:+.4g}, {c.high:+.4g}];"
                       f" seed variance {c.seed_variance}")
        else:
            out.append(f"{'':<14}{c.where}")
    counts = claims["verdict"].value_counts()
    out.append(", ".join(f"{counts.get(v, 0)} {v}" for v in (REPRODUCED, CONTRADICTED, UNRESOLVED, NOT_MEASURED))
               + f" (of {len(claims)} claims, {claims['draws'].iloc[0] if len(claims) else 0} draws)")
    return "\n".join(out)


def markdown(claims: pd.DataFrame) -> str:
    """The claims table as the README and docs/study.md show it (`python -m zephyr.report.claims CSV`)."""
    lines = ["| claim (place) | verdict | rows agreeing | draws agreeing | deciding row: mean [95 % interval] |",
             "|---|---|---:|---:|---|"]
    for c in claims.itertuples():
        decided = "" if c.verdict == NOT_MEASURED else \
            f"{c.deciding_row}: {c.difference:+.3g} [{c.low:+.3g}, {c.high:+.3g}]"
        rows = "–" if c.verdict == NOT_MEASURED else f"{c.rows_agreeing} of {c.rows}"
        draws = "–" if c.verdict == NOT_MEASURED else f"{c.draws_agreeing} of {c.draws}"
        lines.append(f"| \"{c.claim}\" ({c.place}) | {c.verdict} | {rows} | {draws} | {decided or c.where} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    print(markdown(pd.read_csv(argv[0] if argv else "results/claims.csv", keep_default_na=False,
                               na_values={"difference": [""], "low": [""], "high": [""]})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
