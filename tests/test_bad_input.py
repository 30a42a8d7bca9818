"""Bad input as a new user makes it, through `snakemake` itself: nothing stale is trusted, and every
refusal is one line naming the config file, the line and the key, before any job runs."""

import hashlib
import json
import os
import re

import pytest

from conftest import FIXTURES, ROOT, shared_file, snakemake, study_path, write_config
from test_workflow import job_counts

pytestmark = pytest.mark.workflow

MIXTURE = "results/local-only/mixtures/pairs.json"  # each study's own tree: results/{experiment}/
HUB_MIXTURE = "results/hub-only/mixtures/pairs.json"


@pytest.fixture
def local_only(tmp_path):
    """The smallest workflow over a local file: the truthy-dpo fixture, one mixture drawn from all of it."""
    (tmp_path / "data").mkdir()
    local = tmp_path / "data" / "truthy_dpo.jsonl"
    local.write_bytes((FIXTURES / "datasets" / "truthy_dpo.jsonl").read_bytes())
    config = {
        "experiment": "local-only",
        "datasets": {"truthy_dpo": {"source": {"kind": "local", "path": "data/truthy_dpo.jsonl"},
                                    "format": "prompt_pairs"}},
        "mixtures": {"pairs": {"task": "preference", "components": [{"dataset": "truthy_dpo"}]}},
    }
    return write_config(tmp_path, config), local


def prompts(path) -> list[str]:
    return [row["instruction"] for row in json.loads(path.read_text())]


def set_mtime_back(path, seconds=3600):
    """Give `path` an mtime older than every output, as `cp -p`, `rsync -t` or an unpacked archive do."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - seconds * 10**9))


def test_new_content_under_an_older_mtime_reruns_its_dataset_and_what_follows(tmp_path, local_only):
    config, local = local_only
    snakemake(tmp_path, MIXTURE, "--cores", "1", "--configfile", str(config))
    rows = local.read_text().splitlines(keepends=True)
    first = json.loads(rows[0])["prompt"]
    assert first in prompts(tmp_path / MIXTURE)

    local.write_text("".join(rows[1:]))  # the first row removed ...
    set_mtime_back(local)  # ... and the file older than the outputs built from it
    counts = job_counts(snakemake(tmp_path, MIXTURE, "-n", "--quiet", "rules", "--configfile", str(config)).stdout)
    assert counts == {"fetch_dataset": 1, "format_records": 1, "draw_mixture": 1}

    snakemake(tmp_path, MIXTURE, "--cores", "1", "--configfile", str(config))
    manifest = study_path(tmp_path, config, "dataset", "truthy_dpo", "manifest.json")
    manifest = json.loads((tmp_path / manifest).read_text())
    assert manifest["original"]["sha256"] == hashlib.sha256(local.read_bytes()).hexdigest()
    assert manifest["rows"] == len(rows) - 1
    assert first not in prompts(tmp_path / MIXTURE)
    assert "Nothing to be done" in snakemake(tmp_path, MIXTURE, "-n", "--configfile", str(config)).stdout


def test_a_changed_source_stays_out_of_date_until_a_run_succeeds_on_it(tmp_path, local_only):
    config, local = local_only
    snakemake(tmp_path, MIXTURE, "--cores", "1", "--configfile", str(config))
    good = local.read_bytes()
    lines = good.decode().splitlines(keepends=True)

    local.write_text("".join(lines[1:]) + '{"prompt": "unfinished",\n')  # no longer parses
    failed = snakemake(tmp_path, MIXTURE, "--cores", "1", "--configfile", str(config), check=False)
    assert failed.returncode != 0
    log = (tmp_path / study_path(tmp_path, config, "dataset", "truthy_dpo", "manifest.json")).parent.name
    log = (tmp_path / "resources/logs/fetch_dataset/truthy_dpo" / f"{log}.log").read_text()
    assert f"data/truthy_dpo.jsonl: line {len(lines)}: not valid JSON" in log

    # run again: the dataset and everything after it are still out of date, not "Nothing to be done"
    for _ in range(2):
        again = snakemake(tmp_path, MIXTURE, "-n", "--quiet", "rules", "--configfile", str(config))
        assert job_counts(again.stdout) == {"fetch_dataset": 1, "format_records": 1, "draw_mixture": 1}
        assert snakemake(tmp_path, MIXTURE, "--cores", "1", "--configfile", str(config), check=False).returncode != 0

    local.write_text("".join(lines[1:]))  # fixed: new content that parses
    snakemake(tmp_path, MIXTURE, "--cores", "1", "--configfile", str(config))
    assert json.loads(lines[0])["prompt"] not in prompts(tmp_path / MIXTURE)
    assert "Nothing to be done" in snakemake(tmp_path, MIXTURE, "-n", "--configfile", str(config)).stdout


@pytest.fixture
def hub_only(tmp_path):
    """A hub source (a local folder in the hub layout, as the hub client reads it offline) and a mixture."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    rows = [{"system": "", "question": f"What is {i} + {i}?", "chosen": f"{2 * i}", "rejected": f"{2 * i + 1}"}
            for i in range(6)]
    (repo / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "experiment": "hub-only",
        "datasets": {"orca": {"source": {"kind": "hub", "id": str(repo), "split": "train", "revision": "v1"},
                              "format": "orca_dpo"}},
        "mixtures": {"pairs": {"task": "preference", "components": [{"dataset": "orca"}]}},
    }
    path = write_config(tmp_path, config)
    snakemake(tmp_path, HUB_MIXTURE, "--cores", "1", "--configfile", str(path))
    return config, path


def test_a_hub_sources_pinned_revision_decides_its_rerun(tmp_path, hub_only):
    config, path = hub_only
    config["datasets"]["orca"]["source"]["revision"] = "v2"
    write_config(tmp_path, config)
    counts = job_counts(snakemake(tmp_path, HUB_MIXTURE, "-n", "--quiet", "rules", "--configfile", str(path)).stdout)
    assert counts == {"fetch_dataset": 1, "format_records": 1, "draw_mixture": 1}


def test_a_hub_source_that_fails_to_fetch_stays_out_of_date(tmp_path, hub_only):
    config, path = hub_only
    config["datasets"]["orca"]["source"]["split"] = "test"  # the folder has no such split
    write_config(tmp_path, config)
    assert snakemake(tmp_path, HUB_MIXTURE, "--cores", "1", "--configfile", str(path), check=False).returncode != 0
    counts = job_counts(snakemake(tmp_path, HUB_MIXTURE, "-n", "--quiet", "rules", "--configfile", str(path)).stdout)
    assert counts == {"fetch_dataset": 1, "format_records": 1, "draw_mixture": 1}


def test_the_fetch_job_downloads_the_commit_of_the_lock_file_beside_the_config(tmp_path):
    config = {
        "experiment": "locked",
        "datasets": {"orca": {"source": {"kind": "hub", "id": "org/pairs", "split": "train", "revision": "v1"},
                              "format": "orca_dpo"}},
        "mixtures": {"pairs": {"task": "preference", "components": [{"dataset": "orca"}]}},
    }
    path = write_config(tmp_path, config)  # config.test.yaml: its lock is config.test.lock.yaml
    sha = "f" * 40
    entry = {"id": "org/pairs", "split": "train", "revision": "v1", "commit": sha}
    (tmp_path / "config.test.lock.yaml").write_text(json.dumps({"datasets": {"orca": entry}}))
    target = study_path(tmp_path, path, "dataset", "orca", "manifest.json")
    assert snakemake(tmp_path, target, "--cores", "1", "--configfile", str(path), check=False).returncode != 0
    # offline: the download fails, naming it
    log = shared_file(tmp_path, "logs", "fetch_dataset/orca", "*.log").read_text()
    assert f"cannot load hub dataset (kind=hub, id=org/pairs, split=train, revision={sha})" in log


# ---- config refused before any job: one line, the file, the line, the key; no Python stack ----------


def refused(result) -> str:
    """The output of a run that must stop before any job, with one clean error line."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output and 'File "' not in output and "common.smk" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Config error: ")]
    assert len(errors) == 1, output
    return errors[0]


def no_job_ran(workdir):
    assert not (workdir / "resources").exists() and not (workdir / "results").exists()


def test_a_key_given_twice_in_a_configfile_is_refused(tmp_path, tiny_config):
    text = (FIXTURES / "tiny.yaml").read_text()
    block = "  goat:\n    source: {kind: generator, schema: goat, size: 20, seed: 2}\n    format: goat\n"
    assert text.count(block) == 1
    text = text.replace(block, block + block.replace("size: 20", "size: 3"))
    first = text.splitlines().index("  goat:") + 1
    second = first + 3
    path = tmp_path / "config.test.yaml"
    path.write_text(text)
    error = refused(snakemake(tmp_path, "-n", "--configfile", str(path), check=False))
    assert error == (f"Config error: config file config.test.yaml, line {second}: datasets.goat: the key 'goat' "
                     f"is given twice (lines {first} and {second}); YAML keeps only the last, so say it once")
    no_job_ran(tmp_path)


def test_a_yaml_syntax_error_in_the_config_names_file_line_and_column(tmp_path):
    text = (ROOT / "config.yaml").read_text()
    line = text.splitlines().index("mixtures:") + 1
    (tmp_path / "config.yaml").write_text(text.replace("mixtures:\n", "mixtures: [\n", 1))
    error = refused(snakemake(tmp_path, "-n", check=False))  # the default config.yaml of the work directory
    assert re.fullmatch(rf"Config error: config file config\.yaml, line \d+, column \d+: .*started at line {line}, "
                        rf"column {len('mixtures: [')}.*", error), error
    assert "tab" not in error


def test_an_empty_config_file_is_named(tmp_path):
    (tmp_path / "config.yaml").write_text("")
    error = refused(snakemake(tmp_path, "-n", check=False))
    assert error.startswith("Config error: config file config.yaml is empty")


def test_a_config_error_names_the_users_file_and_key_without_a_stack(tmp_path, tiny_config):
    tiny_config["mixtures"]["D_S"]["components"].append({"dataset": "nowhere"})
    path = write_config(tmp_path, tiny_config)
    line = [line.strip() for line in path.read_text().splitlines()].index("- dataset: nowhere") + 1
    error = refused(snakemake(tmp_path, "--cores", "1", "--configfile", str(path), check=False))
    assert error == (f"Config error: config file config.test.yaml, line {line}: "
                     f"mixtures.D_S.components[2].dataset: 'nowhere' is not a key of datasets")
    no_job_ran(tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["models"]["qwen"]["source"]["config"].pop("hidden_size"),
         "models.qwen.source: scratch qwen2 config must set hidden_size"),
        (lambda c: c["models"]["bloom"].update(source={"kind": "hub", "revision": "main"}),
         "models.bloom.source: a hub source needs an id"),
        (lambda c: c["datasets"]["goat"].update(source={"kind": "hub", "split": "train"}),
         "invalid config: datasets.goat.source: a hub source needs 'id'"),
    ],
)
def test_a_bad_source_is_refused_with_the_config_before_any_job(tmp_path, tiny_config, edit, message):
    edit(tiny_config)
    path = write_config(tmp_path, tiny_config)
    error = refused(snakemake(tmp_path, "-n", "--configfile", str(path), check=False))
    assert error.startswith("Config error: config file config.test.yaml, line ") and error.endswith(message)


def test_a_run_that_evaluates_on_a_mixture_without_validation_is_refused_before_any_job(tmp_path, tiny_config):
    """Without its validation split, the tiny DPO run (eval_steps) would train on, its curve missing."""
    del tiny_config["mixtures"]["DPO"]["validation"]
    steps = tiny_config["hyperparameters"]["dpo"]["eval_steps"]
    path = write_config(tmp_path, tiny_config)
    line = path.read_text().splitlines().index("  DPO:") + 1  # the mixture that lacks the key
    error = refused(snakemake(tmp_path, "-n", "--configfile", str(path), check=False))
    assert error.startswith(f"Config error: config file config.test.yaml, line {line}: mixtures.DPO.validation: 0.0 "
                            "holds out no validation records, but variant M2-DS trains on DPO with "
                            f"hyperparameters.dpo, which evaluates during training (eval_steps: {steps}): "
                            "set mixtures.DPO.validation above 0")
    no_job_ran(tmp_path)


# ---- values every range check let through (issue 32): refused or warned at the dry run ----------------


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["hyperparameters"]["dpo"].update(learning_rate=float("nan")),
         "invalid config: hyperparameters.dpo.learning_rate: .nan is not a finite number; every number of a config "
         "must be finite"),
        (lambda c: c["hyperparameters"]["dpo"].update(beta=float("inf")),
         "invalid config: hyperparameters.dpo.beta: .inf is not a finite number; every number of a config must be "
         "finite"),
        (lambda c: c["hyperparameters"]["sft"].update(max_steps=4.0),
         "invalid config: hyperparameters.sft.max_steps: 4.0 is not of type 'integer'"),
        (lambda c: c["variants"]["M2-DS"].update(seed=-1),
         "invalid config: variants.M2-DS.seed: -1 is less than the minimum of 0 (allowed: 0 to 4294967295"),
        (lambda c: c["evaluation"]["reward"].update(max_length=-1),
         "invalid config: evaluation.reward.max_length: -1 is less than the minimum of 1"),
        (lambda c: c["hyperparameters"]["sft"]["speed"].update(micro_batch=3),
         "hyperparameters.sft.speed.micro_batch: 3 does not divide the batch of 4 examples per process and step; "
         "choose one of [1, 2, 4]"),
        (lambda c: c["hyperparameters"]["sft"].update(lr_scheduler_type="cosinus"),
         "hyperparameters.sft.lr_scheduler_type: 'cosinus' is not one of transformers' SchedulerType values"),
        (lambda c: c["hyperparameters"]["dpo"].update(optim="adamw"),
         "hyperparameters.dpo.optim: 'adamw' is not one of transformers' OptimizerNames values"),
        (lambda c: c["hyperparameters"]["dpo"].update(seed=3),
         "hyperparameters.dpo.seed: a hyperparameter set may not set the training seed"),
        (lambda c: c["models"]["bloom"]["source"]["config"].update(n_head=3),
         "models.bloom.source.config.hidden_size: 64 is not a multiple of n_head 3"),
    ],
)
def test_a_bad_value_is_refused_at_the_dry_run(tmp_path, tiny_config, edit, message):
    edit(tiny_config)
    path = write_config(tmp_path, tiny_config)
    error = refused(snakemake(tmp_path, "-n", "--configfile", str(path), check=False))
    assert error.startswith("Config error: config file config.test.yaml, line ") and message in error, error
    no_job_ran(tmp_path)


def test_a_warmup_as_long_as_the_run_is_warned_at_the_dry_run(tmp_path, tiny_config):
    steps = tiny_config["hyperparameters"]["dpo"]["max_steps"]
    tiny_config["hyperparameters"]["dpo"]["warmup_steps"] = steps
    path = write_config(tmp_path, tiny_config)
    line = [text.strip() for text in path.read_text().splitlines()].index(f"warmup_steps: {steps}") + 1
    result = snakemake(tmp_path, "-n", "--configfile", str(path))
    assert (f"WARNING: config file config.test.yaml, line {line}: hyperparameters.dpo.warmup_steps: run M2-DS (qwen) "
            f"warms up for {steps} steps but trains {steps} optimizer steps in all, so its learning rate never reaches "
            f"its peak; set warmup_steps below {steps}") in result.stderr.splitlines()
