"""`python -m zephyr.report.timings`: a run's job time per rule, critical path and idle core-time."""

from zephyr import paths
from zephyr.report import timings

LOG = """Provided cores: 2
[Thu Dec  3 10:00:00 2026]
localrule fetch:
    output: results/a.txt
    jobid: 1
    wildcards: name=a
[Thu Dec  3 10:00:00 2026]
rule other:
    output: results/b.txt
    jobid: 2
[Thu Dec  3 10:00:10 2026]
Finished jobid: 1 (Rule: fetch)
[Thu Dec  3 10:00:30 2026]
Finished jobid: 2 (Rule: other)
[Thu Dec  3 10:00:30 2026]
rule train:
    input: results/a.txt, results/b.txt
    output: results/c.txt
    jobid: 3
    threads: 2
[Thu Dec  3 10:02:00 2026]
Finished jobid: 3 (Rule: train)
"""


def test_the_critical_path_follows_the_longest_chain_of_inputs(tmp_path):
    (tmp_path / ".snakemake" / "log").mkdir(parents=True)
    (tmp_path / ".snakemake" / "log" / "2026-12-03T100000.0.snakemake.log").write_text(LOG)
    # a later `snakemake --report` writes a newer log without jobs: the run's is read
    (tmp_path / ".snakemake" / "log" / "2026-12-03T110000.0.snakemake.log").write_text("Provided cores: 1\n")
    for rule, job, seconds in (("fetch", "a", 9.5), ("other", "b", 29.0), ("train", "c", 89.0)):
        (tmp_path / "benchmarks" / rule).mkdir(parents=True)
        (tmp_path / "benchmarks" / rule / f"{job}.tsv").write_text(f"s\th:m:s\n{seconds}\t0:00:00\n")
    jobs, cores = timings.read_log(tmp_path / ".snakemake" / "log" / "2026-12-03T100000.0.snakemake.log")
    assert cores == 2 and sorted((j.rule, j.seconds, j.threads) for j in jobs) == [
        ("fetch", 10, 1), ("other", 30, 1), ("train", 90, 2)]
    # train waited on both inputs; "other" (30 s) is the longer way to it than "fetch" (10 s)
    assert [j.rule for j in timings.critical_path(jobs)] == ["other", "train"]
    layout = paths.Layout({"experiment": "x", "outputs": "results", "datasets": {}, "models": {}})
    text = timings.report(layout, tmp_path)
    # 120 s on 2 cores = 240 core-seconds; jobs used 10 + 30 + 2 x 90 = 220
    assert "idle core-time: 20 of 240 core-seconds" in text
    assert "critical path: 2 jobs, 120 s of the 120 s" in text
    assert "(benchmarks/ and the shared jobs', 128 s in all)" in text  # 9.5 + 29 + 89 = 127.5, the jobs' own


def test_a_later_run_of_another_study_is_passed_over(tmp_path):
    logs = tmp_path / ".snakemake" / "log"
    logs.mkdir(parents=True)
    (logs / "2026-12-03T100000.0.snakemake.log").write_text(LOG)
    (logs / "2026-12-03T120000.0.snakemake.log").write_text(LOG.replace("results/", "results/other/"))
    plain = paths.Layout({"experiment": "x", "outputs": "results", "datasets": {}, "models": {}})
    assert timings.report(plain, tmp_path).startswith(".snakemake/log/2026-12-03T100000.0.snakemake.log")
    other = paths.Layout({"experiment": "other", "datasets": {}, "models": {}})
    assert timings.report(other, tmp_path).startswith(".snakemake/log/2026-12-03T120000.0.snakemake.log")
