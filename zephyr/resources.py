"""Resource names a run may set (profiles, --default-resources, --set-resources, --resources).

Snakemake accepts any name and the SLURM executor plugin silently ignores the ones it does not read:
a profile asking for `gpus: 2` (the plugin reads `gpu`) would submit every job without a GPU. So a
name that neither reads is an error before anything is submitted.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

#: Snakemake's own resources, Zephyr's `gpu` (which the SLURM plugin turns into --gpus) and `gpu_mem_mb`
#: (the GPU memory a one-GPU job books when local jobs share a GPU; SLURM jobs keep whole GPUs).
SNAKEMAKE = {"_cores", "_nodes", "threads", "tmpdir", "mem", "mem_mb", "mem_mib", "disk", "disk_mb", "disk_mib",
             "runtime", "gpu", "gpu_mem_mb"}
#: What snakemake-executor-plugin-slurm 2.8.0 reads from a job's resources.
SLURM = {"slurm_partition", "slurm_account", "slurm_extra", "slurm_cluster", "cluster", "clusters", "constraint",
         "qos", "cpus_per_task", "cpus_per_gpu", "mem_mb_per_cpu", "tasks", "tasks_per_gpu", "tasks_per_node",
         "nodes", "gpu_model", "gres", "mpi"}
KNOWN = SNAKEMAKE | SLURM


class ResourceError(ValueError):
    """A resource name that nothing reads."""


def check(defaults: Iterable[str] = (), per_rule: Mapping[str, Iterable[str]] | None = None,
          limits: Iterable[str] = ()) -> None:
    """Refuse resource names that neither Snakemake nor the SLURM plugin reads, saying where each was set."""
    places = [("default-resources", defaults), ("resources (global limits)", limits)]
    places += [(f"set-resources {rule}", names) for rule, names in (per_rule or {}).items()]
    for place, names in places:
        for name in names:
            if name not in KNOWN:
                close = difflib.get_close_matches(name, sorted(KNOWN), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(KNOWN))}"
                raise ResourceError(f"{place}: resource {name!r} is read by neither Snakemake nor the SLURM "
                                    f"executor plugin{hint}")


def check_settings(settings) -> None:
    """`check` on a run's Snakemake ResourceSettings (its profiles and command line, merged)."""
    check(defaults=(settings.default_resources or {}).keys(),
          per_rule={rule: names.keys() for rule, names in settings.overwrite_resources.items()},
          limits=settings.resources.keys())


def check_gpu_limit(settings, rules) -> None:
    """Snakemake quietly lowers a job's `gpu` to the run's limit (`--resources gpu=N`, or a profile's
    `resources:`): refuse that instead, before any job, naming the rule and both numbers."""
    limit = getattr(settings.resources.get("gpu"), "value", None)
    if limit is None:
        return
    for rule in rules:
        declared = settings.overwrite_resources.get(rule.name, {}).get("gpu") or rule.resources.get("gpu")
        gpus = getattr(declared, "value", None)
        if isinstance(gpus, int) and gpus > limit:
            raise ResourceError(
                f"rule {rule.name} asks for {gpus} GPU(s) (compute.gpus or set-resources) but this run allows {limit} "
                f"(--resources gpu={limit}, or the profile's resources:); lower compute.gpus (training keeps its "
                "global batch, so its results do not change) or raise the limit")
