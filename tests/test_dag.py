"""DAG pictures: `snakemake --rulegraph` / `--dag` give DOT that graphviz renders, for both configs
(what `make dag` does)."""

import re
import shutil
import subprocess

import pytest

from conftest import ROOT, load_yaml, snakemake

pytestmark = [
    pytest.mark.workflow,
    pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed (make dag installs it)"),
]

CONFIGS = {"default": ROOT / "config.yaml", "paper": ROOT / "config" / "paper.yaml"}


def render(dot_source: str) -> str:
    result = subprocess.run(["dot", "-Tsvg"], input=dot_source, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name", CONFIGS)
def test_rulegraph_and_dag_are_dot_that_graphviz_renders(tmp_path, name):
    config = CONFIGS[name]
    rulegraph = snakemake(tmp_path, "--rulegraph", "dot", "--configfile", str(config)).stdout
    dag = snakemake(tmp_path, "--dag", "dot", "--configfile", str(config)).stdout
    for graph in (rulegraph, dag):
        assert graph.lstrip().startswith("digraph") and graph.rstrip().endswith("}"), graph[:500]
        assert "<svg" in render(graph)

    rules = set(re.findall(r'label = "(\w+)"', rulegraph))
    assert {"all", "fetch_dataset", "format_records", "draw_mixture", "dataset_info"} <= rules
    # one node per job: as many fetch_dataset jobs as the config has datasets
    datasets = load_yaml(config)["datasets"]
    assert len(re.findall(r'label = "fetch_dataset\\n', dag)) == len(datasets)
