"""Where a finished run's minutes went: `python -m zephyr.report.timings [CONFIG]` (`make timings`).

Reads the study's newest run in the Snakemake logs (`.snakemake/log/`, the newest that ran jobs of this
study: a later `--report` or another study's run is passed over; its jobs' start and end times to the
second, threads, inputs and outputs) and the study's benchmarks (the shared jobs' of its fingerprints too)
(each job's own seconds), and prints the job time per rule, the critical path (the chain of jobs,
each waiting on the one before, that set the run's length) and the idle core-time (cores x wall
time, less each job's threads x its duration). A reading of one run, not a timed test.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from .. import paths, studies

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
STARTED = re.compile(r"^(?:local)?rule (\w+):$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


@dataclass
class Job:
    jobid: int
    rule: str
    start: datetime
    end: datetime | None = None
    threads: int = 1
    wildcards: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def read_log(path: str | Path) -> tuple[list[Job], int]:
    """The finished jobs of a Snakemake log, and the cores the run was given."""
    jobs: dict[int, Job] = {}
    cores, stamp, current = 1, None, None
    for line in Path(path).read_text().splitlines():
        line = line.rstrip()
        if match := STAMP.match(line):
            stamp, current = datetime.strptime(match[1], "%a %b %d %H:%M:%S %Y"), None
        elif line.startswith("Provided cores:"):
            cores = int(line.split(":")[1])
        elif (match := STARTED.match(line)) and stamp:
            current = Job(0, match[1], stamp)
        elif current and line.startswith("    ") and ":" in line:
            key, value = (part.strip() for part in line.split(":", 1))
            if key == "jobid":
                current.jobid = int(value)
                jobs[current.jobid] = current
            elif key == "threads":
                current.threads = int(value)
            elif key in ("input", "output"):
                getattr(current, key + "s").extend(v.strip() for v in value.split(","))
            elif key == "wildcards":
                current.wildcards = value
        elif (match := FINISHED.match(line)) and stamp and int(match[1]) in jobs:
            jobs[int(match[1])].end = stamp
    return [job for job in jobs.values() if job.end], cores


def critical_path(jobs: list[Job]) -> list[Job]:
    """The chain of jobs, each consuming an output of the one before, that ends with the last job to
    finish and is longest counted in the jobs' own durations."""
    made_by = {out: job for job in jobs for out in job.outputs}
    longest: dict[int, tuple[float, Job | None]] = {}
    for job in sorted(jobs, key=lambda j: j.end):
        parents = {made_by[i].jobid: made_by[i] for i in job.inputs if i in made_by}
        before = max(((longest[p][0], parent) for p, parent in parents.items() if p in longest),
                     key=lambda pair: pair[0], default=(0.0, None))
        longest[job.jobid] = (before[0] + job.seconds, before[1])
    path, job = [], max(jobs, key=lambda j: j.end) if jobs else None
    while job is not None:
        path.append(job)
        job = longest[job.jobid][1]
    return path[::-1]


def benchmark_seconds(layout: paths.Layout) -> pd.DataFrame:
    """Each benchmarked job's own seconds: rule, job (the file's path under the rule) and seconds; the
    study's own jobs and the shared jobs of its fingerprints."""
    rows = []
    root = Path(layout.benchmarks)
    for entry in sorted(root.iterdir()) if root.is_dir() else []:  # a rule's folder, or its one job's file
        jobs = sorted(entry.rglob("*.tsv")) if entry.is_dir() else [entry] if entry.suffix == ".tsv" else []
        for tsv in jobs:
            rows.append({"rule": entry.stem, "job": tsv.relative_to(entry).with_suffix("").as_posix() if
                         entry.is_dir() else entry.stem, "seconds": _seconds(tsv)})
    for rule, name, tsv in layout.shared_benchmarks():
        rows.append({"rule": rule, "job": name, "seconds": _seconds(tsv)})
    return pd.DataFrame(rows, columns=["rule", "job", "seconds"])


def _seconds(tsv: Path) -> float:
    return float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1])


def study_jobs(jobs: list[Job], layout: paths.Layout) -> list[Job]:
    """The jobs of a log that made this study's files (its own, or a shared file it reads)."""
    shared = layout.shared()
    return [j for j in jobs if any(layout.owns(o) or any(o.startswith(s) for s in shared) for o in j.outputs)]


def report(layout: paths.Layout, workdir: str | Path = ".") -> str:
    """The newest run of this study in the Snakemake logs of `workdir` (a later run of another study
    is passed over)."""
    with contextlib.chdir(workdir):  # the layout's paths, and the logs' own, are the working directory's
        return _report(layout, Path(workdir))


def _report(layout: paths.Layout, workdir: Path) -> str:
    logs = sorted(Path(".snakemake", "log").glob("*.snakemake.log"), reverse=True)
    runs = ((path, study_jobs(jobs, layout), cores) for path in logs for jobs, cores in [read_log(path)])
    log_path, jobs, cores = next((run for run in runs if run[1]), (None, [], 1))
    if log_path is None:
        raise SystemExit(f"{workdir}: no log of a run with finished jobs of study {layout.config['experiment']!r} "
                         f"in .snakemake/log (run the workflow first)")
    wall = (max(j.end for j in jobs) - min(j.start for j in jobs)).total_seconds()
    busy = sum(j.threads * j.seconds for j in jobs)
    bench = benchmark_seconds(layout)
    per_rule = bench.groupby("rule")["seconds"].agg(["count", "sum", "mean", "max"]).sort_values("sum", ascending=False)
    out = [f"{log_path}: {len(jobs)} jobs on {cores} cores, {wall / 60:.1f} min of wall time",
           f"idle core-time: {cores * wall - busy:.0f} of {cores * wall:.0f} core-seconds "
           f"({1 - busy / (cores * wall):.0%}; jobs' threads x their durations from the log)", "",
           f"job time per rule ({layout.benchmarks}/ and the shared jobs', {bench['seconds'].sum():.0f} s in all):",
           per_rule.round(1).rename(columns={"count": "jobs", "sum": "seconds"}).to_string(), ""]
    path = critical_path(jobs)
    out.append(f"critical path: {len(path)} jobs, {sum(j.seconds for j in path):.0f} s of the {wall:.0f} s")
    out += [f"  {j.start:%H:%M:%S} +{j.seconds:5.0f} s  {j.rule} {j.wildcards}".rstrip() for j in path]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default="config.yaml", help="the study's config (default: config.yaml)")
    parser.add_argument("--workdir", default=".", help="the run's working directory (default: here)")
    args = parser.parse_args(argv)
    print(report(studies.load(args.config)[1], args.workdir))


if __name__ == "__main__":
    main(sys.argv[1:])
