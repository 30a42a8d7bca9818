# Helpers only: config validation, path functions and wildcard constraints shared by the rule files.

import os
import re
import sys

# Scripts import the `zephyr` package from this checkout, in every execution mode
# (local, SLURM jobs re-parse this file, conda and Apptainer inherit the environment).
sys.path.insert(0, workflow.basedir)
# (Set, not required: so no `envvars:` assertion.)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (workflow.basedir, os.getenv("PYTHONPATH")) if p
    )
)

from zephyr import config as zconfig

zconfig.validate(config)

DATASETS = config["datasets"]
MIXTURES = config["mixtures"]


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names))


wildcard_constraints:
    dataset=_alternatives(DATASETS),
    mixture=_alternatives(MIXTURES),


def local_source_input(wildcards):
    """A local source file is an input when present, so a changed file reruns its dataset;
    when absent the job still plans, and fails with an error naming the file."""
    source = DATASETS[wildcards.dataset]["source"]
    if source["kind"] == "local" and os.path.exists(source["path"]):
        return [source["path"]]
    return []


def mixture_inputs(wildcards):
    spec = MIXTURES[wildcards.mixture]
    return {
        "records": [
            f"results/records/{c['dataset']}.jsonl" for c in spec["components"]
        ],
        "exclude": [f"results/mixtures/{m}.json" for m in spec["exclude"]]
        + [f"results/mixtures/{m}.validation.json" for m in spec["exclude"]],
    }


def all_mixtures():
    return [f"results/mixtures/{m}.json" for m in MIXTURES] + [
        "results/mixtures/dataset_info.json"
    ]
