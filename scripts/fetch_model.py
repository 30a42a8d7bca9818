"""Snakemake glue for zephyr.model.fetch.fetch_model (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, logs
from zephyr.model import fetch

logs.setup(snakemake.log[0])
devices.for_job(snakemake.threads, snakemake.resources)
fetch.fetch_model(
    snakemake.wildcards.model,
    snakemake.params.source,
    Path(snakemake.output.manifest).parent,
    chat_template=snakemake.params.chat_template,
    trust_remote_code=snakemake.params.trust_remote_code,
    lock_file=snakemake.params.lock,
)
