"""Snakemake glue for zephyr.files.share: draw 1's base-model outputs into draw k's tree (rules/draws.smk)."""

from zephyr import files, logs

logs.setup(snakemake.log[0])
named = dict(snakemake.input.items())
files.share([(named[name], path) for name, path in snakemake.output.items()],
            [(named["data"], named["base_data"])] if "data" in named else [],
            folders=snakemake.params.get("folders", False))
