"""Resource names nothing reads are refused before any job runs or is submitted."""

import pytest

from conftest import ROOT, load_yaml, snakemake, write_config
from zephyr import resources


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"defaults": ["mem_mb", "gpus"]}, r"default-resources: resource 'gpus' .*; did you mean 'gpu'\?"),
        ({"per_rule": {"train_adapter": ["slurm_partion"]}}, r"set-resources train_adapter: .*'slurm_partition'\?"),
        ({"limits": ["gpu", "vram"]}, r"resources \(global limits\): resource 'vram' .*known: "),
    ],
)
def test_an_unread_resource_is_named_with_where_it_was_set(kwargs, message):
    with pytest.raises(resources.ResourceError, match=message):
        resources.check(**kwargs)


def test_the_rules_declare_only_resources_something_reads():
    declared = set()
    for path in (ROOT / "rules").glob("*.smk"):
        in_resources = False
        for line in path.read_text().splitlines():
            if line.strip().endswith(":"):
                in_resources = line.strip() == "resources:"
            elif in_resources and "=" in line:
                declared.add(line.split("=")[0].strip())
    assert declared and declared <= resources.KNOWN


def test_a_typo_in_the_slurm_profile_stops_the_run_before_submission(tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    slurm = (ROOT / "profiles" / "slurm" / "config.yaml").read_text()
    (profile / "config.yaml").write_text(slurm.replace("  mem_mb: 4000", "  mem_mb: 4000\n  gpus: 1"))
    config = str(ROOT / "config.yaml")
    result = snakemake(tmp_path, "-n", "--profile", str(profile), "--configfile", config, check=False)
    assert result.returncode != 0
    assert "default-resources: resource 'gpus' is read by neither" in result.stdout + result.stderr
    assert "Submitted" not in result.stdout + result.stderr
    snakemake(tmp_path, "-n", "--quiet", "rules", "--profile", str(ROOT / "profiles" / "slurm"), "--configfile", config)


def test_a_gpu_limit_below_what_a_rule_asks_is_refused_not_lowered(tmp_path):
    """Snakemake would quietly give such a job fewer GPUs than it declares."""
    config = load_yaml(ROOT / "config.yaml")
    config["compute"] = {"gpus": 1}
    path = write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", "--configfile", str(path), "--resources", "gpu=0", check=False)
    assert result.returncode != 0
    assert "rule train_adapter asks for 1 GPU(s) (compute.gpus or set-resources) but this run allows 0" in (
        result.stdout + result.stderr)
    result = snakemake(tmp_path, "-n", "--configfile", str(path), "--resources", "gpu=1",
                       "--set-resources", "train_adapter:gpu=2", check=False)
    assert "rule train_adapter asks for 2 GPU(s)" in result.stdout + result.stderr and result.returncode != 0
    snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile", str(path), "--resources", "gpu=1")
