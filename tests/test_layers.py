"""No module of the package imports from a layer above its own (function-local imports count too), so
that each layer can be read, tested and reused without the ones above it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "zephyr"

#: The layers, lowest first: a module may import from its own layer and the ones below. A module is in the
#: layer of the longest name here that is it or a package holding it.
LAYERS = (
    # plumbing and the study's vocabulary: files, locks, logs, paths, devices, dtypes, pins, resources
    ("zephyr", "zephyr.keys", "zephyr.includes",
     "zephyr.files", "zephyr.lock", "zephyr.logs", "zephyr.environment", "zephyr.resources",
     "zephyr.study", "zephyr.precision", "zephyr.paths", "zephyr.devices"),
    ("zephyr.data",),  # sources → formats and generators → records → mixtures
    ("zephyr.model",),  # model folders, prompts, training, merge, quantize
    ("zephyr.evaluation",),  # the scoring engine, the task registry, metrics
    # a study as a whole: its config checked (the checks read data and model), its runs planned, its tree
    ("zephyr.config", "zephyr.plan", "zephyr.studies"),
    # what a finished study's outputs say, whether they hold; its docs
    ("zephyr.report", "zephyr.verify", "zephyr.docs"),
)


def layer_of(module: str) -> int:
    owners = [(len(name), level) for level, names in enumerate(LAYERS) for name in names
              if module == name or module.startswith(name + ".")]
    if not owners:
        raise KeyError(f"{module} is in no layer: add it to LAYERS")
    return max(owners)[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(module: str, is_package: bool, source: str) -> list[tuple[int, str]]:
    """(line, module) of every zephyr module that `source` imports, at any depth of the code."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from pkg import name`: the submodule pkg.name where there is one, else pkg itself
            found += [(node.lineno, f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base)
                      for alias in node.names]
    return [(line, name) for line, name in found if name == "zephyr" or name.startswith("zephyr.")]


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def upward_imports(module: str, is_package: bool, source: str) -> list[str]:
    own = layer_of(module)
    return [f"{module} (line {line}) imports {name}, a layer above it"
            for line, name in imported(module, is_package, source) if layer_of(name) > own]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in MODULES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: module_name(path))
def test_no_module_imports_from_a_layer_above_it(path):
    assert upward_imports(module_name(path), path.name == "__init__.py", path.read_text()) == []


def test_an_upward_import_is_found_at_any_depth():
    """The check itself: relative imports resolved from the module's package, function-local ones seen."""
    source = "from . import files\n\n\ndef head():\n    from .model.lm_head import PlainLogProb\n"
    assert upward_imports("zephyr.devices", False, source) == [
        "zephyr.devices (line 5) imports zephyr.model.lm_head, a layer above it"]
    assert upward_imports("zephyr.model.speed", False, "from .. import plan\nfrom . import lm_head\n") == [
        "zephyr.model.speed (line 1) imports zephyr.plan, a layer above it"]
    assert upward_imports("zephyr.config", True, "from .checks import check\nfrom ..model import lora\n") == []
