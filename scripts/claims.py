"""Snakemake glue for zephyr.report.claims: this study's draws read through zephyr.report.compare, judged
together. Draws 2..N (`params.draws`, their validated configs) must be finished and current."""

from pathlib import Path

from zephyr import files, logs, paths
from zephyr.includes import include_tasks
from zephyr.report import claims, compare, findings, table

logs.setup(snakemake.log[0])
draws = [snakemake.config, *snakemake.params.draws]
rows = []
for number, config in enumerate(draws, 1):
    include_tasks(config)
    layout = paths.Layout(config)
    if number > 1:  # its record proves the tree is this config's (zephyr.studies.check_current, without its imports)
        found = files.read_json(Path(layout.study_file())).get("config_fingerprint")
        if found != paths.fingerprint(config):
            raise RuntimeError(f"{layout.study_file()}: draw {number} was run with config {found}, not "
                               f"{paths.fingerprint(config)}: rerun it (make run DRAWS={len(draws)})")
    rows.append(findings.findings(config, compare.read(config, layout)))
by_row, by_claim = claims.tables(rows)
table.write_csv(by_row, snakemake.output.rows)
table.write_csv(by_claim, snakemake.output.claims)
print(claims.render(by_claim))
