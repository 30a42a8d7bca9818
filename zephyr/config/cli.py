"""`python -m zephyr.config [FILE...]` (`make check-config`): config files checked before any run."""

from __future__ import annotations

import copy
import sys

from .errors import ConfigError
from .loading import validate_workflow
from .reading import read_files


def main(argv: list[str] | None = None) -> int:
    """`python -m zephyr.config [FILE...]`: check config files as the workflow reads them (each read
    strictly, merged in order, validated), naming the file, line and key of an error. Snakemake
    itself reports a YAML syntax error or an empty file given with --configfile before the workflow
    is read, without the file or line: this names them."""
    from snakemake.utils import update_config

    paths = list(argv if argv is not None else sys.argv[1:]) or ["config.yaml"]
    try:
        found = read_files(paths)
        config: dict = {}
        for one in found:
            update_config(config, copy.deepcopy(one.data))
        validate_workflow(config, found)
    except ConfigError as err:
        print(f"Config error: {err}", file=sys.stderr)
        return 1
    print(f"{' + '.join(paths)}: valid ({len(config['datasets'])} datasets, {len(config['mixtures'])} mixtures, "
          f"{len(config['models'])} models, {len(config['variants'])} variants)")
    return 0
