"""The workflow as a user meets it: dry runs of both configs, a tiny end-to-end run, precise reruns."""

import hashlib
import re
import shutil

import pytest

from conftest import ROOT, load_yaml, snakemake, write_config

pytestmark = pytest.mark.workflow


def job_counts(output: str) -> dict[str, int]:
    """Parse the job table of `snakemake -n --quiet rules`."""
    counts = {}
    for line in output.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match[1] != "total":
            counts[match[1]] = int(match[2])
    return counts


def digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*")) if p.is_file()}


def test_default_dry_run_plans_every_stage(tmp_path):
    config = load_yaml(ROOT / "config.yaml")
    out = snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile", str(ROOT / "config.yaml")).stdout
    counts = job_counts(out)
    assert counts["fetch_dataset"] == counts["format_records"] == len(config["datasets"])
    assert counts["draw_mixture"] == len(config["mixtures"]) and counts["dataset_info"] == 1


def test_paper_dry_run_lists_the_whole_data_dag(tmp_path):
    paper = load_yaml(ROOT / "config" / "paper.yaml")
    out = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "config" / "paper.yaml")).stdout
    counts = job_counts(snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile",
                                  str(ROOT / "config" / "paper.yaml")).stdout)
    assert counts["fetch_dataset"] == counts["format_records"] == len(paper["datasets"]) == 33
    assert counts["draw_mixture"] == len(paper["mixtures"])
    for dataset in paper["datasets"]:
        assert f"resources/datasets/{dataset}/manifest.json" in out


def test_a_configfile_replaces_the_default_instead_of_merging(tmp_path, tiny_config):
    """Snakemake merges --configfile into `configfile:` key by key; Zephyr must not."""
    assert set(load_yaml(ROOT / "config.yaml")["datasets"]) - set(tiny_config["datasets"])
    config = write_config(tmp_path, tiny_config)
    out = snakemake(tmp_path, "-n", "--configfile", str(config)).stdout
    planned = set(re.findall(r"resources/datasets/(\w+)/manifest\.json", out))
    assert planned == set(tiny_config["datasets"])


def test_tiny_experiment_end_to_end_reruns_nothing_and_reproduces_bytes(tmp_path, tiny_config):
    config = write_config(tmp_path, tiny_config)
    snakemake(tmp_path, "--cores", "2", "--configfile", str(config))
    mixtures = tmp_path / "results" / "mixtures"
    for name in tiny_config["mixtures"]:
        assert (mixtures / f"{name}.json").exists() and (mixtures / f"{name}.stats.csv").exists()
    assert (tmp_path / "logs" / "fetch_dataset" / "epfl.log").exists()
    first = digests(mixtures)

    again = snakemake(tmp_path, "-n", "--configfile", str(config)).stdout
    assert "Nothing to be done" in again

    shutil.rmtree(tmp_path / "results")
    shutil.rmtree(tmp_path / "resources")
    snakemake(tmp_path, "--cores", "2", "--configfile", str(config))
    assert digests(mixtures) == first

    # a changed cap reruns that mixture (and the index over mixtures), nothing upstream
    tiny_config["mixtures"]["D_S"]["components"][0]["cap"] = 5
    write_config(tmp_path, tiny_config)
    counts = job_counts(snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile", str(config)).stdout)
    assert counts.get("draw_mixture") == 1 and "fetch_dataset" not in counts and "format_records" not in counts


def test_a_malformed_local_file_fails_its_job_naming_file_and_line(tmp_path, tiny_config):
    (tmp_path / "data" / "truthy_dpo.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{oops\n')
    config = write_config(tmp_path, tiny_config)
    target = "resources/datasets/truthy_dpo/manifest.json"  # before --configfile, which takes several values
    result = snakemake(tmp_path, target, "--cores", "1", "--configfile", str(config), check=False)
    assert result.returncode != 0
    log = (tmp_path / "logs" / "fetch_dataset" / "truthy_dpo.log").read_text()
    assert "data/truthy_dpo.jsonl: line 2: not valid JSON" in log
    assert not (tmp_path / "resources" / "datasets" / "truthy_dpo" / "manifest.json").exists()


def test_a_config_error_stops_before_any_job(tmp_path, tiny_config):
    tiny_config["mixtures"]["D_S"]["components"].append({"dataset": "nowhere"})
    config = write_config(tmp_path, tiny_config)
    result = snakemake(tmp_path, "--cores", "1", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "mixtures.D_S.components[2].dataset: 'nowhere' is not a key of datasets" in result.stdout + result.stderr
    assert not (tmp_path / "resources").exists()


def test_lint_and_format():
    lint = snakemake(ROOT, "--lint", "--configfile", str(ROOT / "config.yaml"), check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    import subprocess
    import sys
    from pathlib import Path

    snakefmt = Path(sys.executable).with_name("snakefmt")
    files = [str(ROOT / "Snakefile"), *map(str, sorted((ROOT / "rules").glob("*.smk")))]
    result = subprocess.run([str(snakefmt), "--check", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
