"""What `max_length` cuts of a run's records: measured when the run starts, recorded in its summary and
card, warned in its log and, once it has finished, in the study's warnings table. Kept free of torch, so
that the report's jobs can read it."""

from __future__ import annotations

import logging

log = logging.getLogger("zephyr.model.training")

#: The share of a run's records cut at `max_length` above which training warns.
CUT_WARNING = 0.05
#: What a trainer's records are called in the warning.
RECORDS = {"sft": "SFT records", "dpo": "preference pairs"}


def _message(what: str, cut: int, measured: int, total: int, share: float, max_length: int | None) -> str:
    sample = "" if measured == total else f", a sample of the {total},"
    return (f"{cut} of {measured} {what}{sample} ({100 * share:.1f} %) are longer than max_length={max_length}: "
            "their answers are cut, the end and the EOS never trained; raise max_length")


def truncation(name: str, what: str, cut: int, measured: int, total: int, max_length: int | None) -> dict:
    """What `max_length` cuts of a run's records (`cut` of the `measured`, drawn from `total`): their answer
    loses its end and its EOS, so the run never learns to stop there. Recorded in the run's summary and
    card; above `CUT_WARNING` of them, a warning."""
    share = cut / measured if measured else 0.0
    if share > CUT_WARNING:
        log.warning("run %s: %s", name, _message(what, cut, measured, total, share, max_length))
    return {"max_length": max_length, "cut": cut, "measured": measured, "share": round(share, 4)}


def summary_warnings(summary: dict) -> list[dict]:
    """A finished run's warning from its `summary.json`, as a row of the study's warnings table (`part`: the
    run), or none: the one its log gave when it started, so that it is not lost in the log."""
    cut = summary.get("truncation")
    share = cut["cut"] / cut["measured"] if cut and cut["measured"] else 0.0  # unrounded, as the log's
    if share <= CUT_WARNING:
        return []
    text = _message(RECORDS[summary["trainer"]], cut["cut"], cut["measured"], summary["train_records"], share,
                    cut["max_length"])
    return [{"part": f"run {summary['run']}", "count": cut["cut"], "warning": text}]
