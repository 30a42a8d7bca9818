"""The format stage: a fetched raw dataset → `results/records/{dataset}.jsonl` of unified records."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import files
from . import formats, sources

log = logging.getLogger(__name__)


def format_dataset(dataset: str, raw_dir: str | Path, out_path: str | Path, formatter: str,
                   options: dict | None = None) -> int:
    """Format every raw row of `dataset` with `formatter`; returns the number of records written, after
    them their manifest (`files.write_sidecar`: the draws check the records against it)."""
    data_path = Path(raw_dir) / sources.DATA_FILE
    rows = sources.load_rows(raw_dir)
    columns = rows[0].keys() if rows else ()
    records = formats.format_rows(rows, formatter, dataset=dataset, origin=str(data_path), columns=columns,
                                  options=options)
    written = files.write_jsonl(out_path, records)
    files.write_sidecar(out_path, {"dataset": dataset, "formatter": formatter, "options": options or {},
                                   "records": written})
    return written
