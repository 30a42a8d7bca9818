"""Snakemake glue for zephyr.model.fetch.fetch_model (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, logs
from zephyr.model import fetch

logs.setup(snakemake.log[0])
devices.for_job(snakemake.threads, snakemake.resources)
params = snakemake.params.fetch
fetch.fetch_model(
    snakemake.wildcards.model,
    params["source"],
    Path(snakemake.output.manifest).parent,
    chat_template=params["chat_template"],
    trust_remote_code=params["trust_remote_code"],
    lock_file=params["lock"],
)
