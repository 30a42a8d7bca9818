"""Experiment configuration: strict reading, schema validation (with defaults) and the checks a schema
cannot express.

Everything here runs when the Snakefile is parsed, so a bad config fails before any job runs, with a
one-line error naming the config file, the line and the key. The same `load` serves notebooks and
scripts run outside Snakemake.

    errors     ConfigError, which carries the key it is about
    reading    config files read strictly, with each key's line; an error placed at its key's line
    schema     the JSON schema: types, ranges, defaults
    checks     what the schema cannot express (names that refer to other keys), and the warnings
    loading    load / validate: all of the above, as the workflow and notebooks call it
    cli        python -m zephyr.config FILE...
"""

from .checks import check, config_warnings
from .cli import main
from .errors import ConfigError
from .loading import for_workflow, include_tasks, load, validate, validate_workflow, warn
from .reading import ConfigFile, locate, read_file, read_files, read_workflow_files
from .schema import SCHEMA

__all__ = ["SCHEMA", "ConfigError", "ConfigFile", "check", "config_warnings", "for_workflow", "include_tasks", "load",
           "locate", "main", "read_file", "read_files", "read_workflow_files", "validate", "validate_workflow", "warn"]
