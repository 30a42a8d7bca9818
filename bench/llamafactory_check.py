"""LlamaFactory loads and trains every SFT and ranking mixture as it is: checked by running LlamaFactory.

    .venv/bin/python -m bench.llamafactory_check --workdir /tmp/lfwork              # the default experiment
    .venv/bin/python -m bench.llamafactory_check --workdir /tmp/lfwork --runs qwen/M1-DS-cosine qwen/M2-DS

1. Builds LlamaFactory in its own venv (`--venv`, created when missing, reused when present; its pins
   conflict with Zephyr's). torch is the CPU build 2.13.0; LlamaFactory requires torchvision and
   torchaudio, but text-only training needs neither, and no build of them imports beside that torch:
   torchvision is left out and `torchaudio` is an empty stub module (LlamaFactory imports it at start).
2. Has Snakemake make what it needs in `--workdir` (the mixtures, `dataset_info.json`, the base model,
   the runs' LlamaFactory YAMLs); nothing is trained by Zephyr.
3. Compares the token ids LlamaFactory builds for records of each mixture (its template parsed from the
   model folder's chat template) with those of Zephyr's prompts.
4. Trains `--steps` steps on each SFT and ranking mixture registered in `dataset_info.json` (its
   validation split as LlamaFactory's eval set), then each run's YAML as the workflow writes it
   (`llamafactory-cli train results/llamafactory/{model}/{variant}.yaml max_steps=N`), in order, so
   that DPO from M1 starts from the M1 adapter LlamaFactory just trained.

Prints what loaded and trained, writes `--out`/summary.json, and exits 1 if anything failed. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: What the venv installs beside LlamaFactory's own requirements (the versions it was checked with).
PINS = ["llamafactory==0.9.5", "torch==2.13.0", "transformers==5.6.0", "trl==0.24.0", "peft==0.18.1",
        "datasets==4.0.0", "accelerate==1.11.0"]
#: Requirements of LlamaFactory left out: no build of them imports beside the CPU torch 2.13.0.
LEFT_OUT = {"torchvision", "torchaudio"}
STAMP = ".zephyr-llamafactory"
TORCHAUDIO_STUB = '''"""Stub: this LlamaFactory venv trains text only; no torchaudio build imports beside its
CPU torch."""


def __getattr__(name):
    raise AttributeError(f"torchaudio.{name}: torchaudio is a stub in this text-only LlamaFactory venv")
'''
VERSIONS = ("llamafactory", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def ensure_venv(venv: Path) -> Path:
    """The venv's python, after building LlamaFactory into it unless a finished build is there."""
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    if stamp.is_file() and stamp.read_text().split() == PINS and python.exists():
        print(f"reusing {venv}")
        return python
    if not python.exists():
        base = shutil.which("python3.11")
        if base is None:
            sys.exit("python3.11 not found: LlamaFactory 0.9.5 needs Python >= 3.11")
        run([base, "-m", "venv", venv])
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, "torch==2.13.0"])  # first: the CPU build on this machine's disk, not a CUDA one from PyPI
    run([*pip, "--no-deps", "llamafactory==0.9.5"])
    requires = json.loads(subprocess.run(
        [python, "-c", "import importlib.metadata as m, json; print(json.dumps(m.requires('llamafactory')))"],
        check=True, capture_output=True, text=True).stdout)
    wanted = [r for r in requires if re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() not in LEFT_OUT]
    run([*pip, *wanted, *PINS[1:]])  # not llamafactory itself: pip would bring back what is left out
    run([python, "-m", "pip", "uninstall", "--yes", "--quiet", *sorted(LEFT_OUT)])  # a half-built venv's
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    stub = Path(purelib) / "torchaudio"
    stub.mkdir(exist_ok=True)
    (stub / "__init__.py").write_text(TORCHAUDIO_STUB)
    run([venv / "bin" / "llamafactory-cli", "version"], env=lf_env(), stdout=subprocess.DEVNULL)
    stamp.write_text("\n".join(PINS) + "\n")
    return python


def lf_env() -> dict:
    """LlamaFactory's processes: offline, none of Zephyr's venv on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def versions(python: Path) -> dict:
    code = ("import importlib.metadata as m, json, sys; "
            f"print(json.dumps({{n: m.version(n) for n in {list(VERSIONS)!r}}} | "
            "{'python': sys.version.split()[0]}))")
    found = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True, env=lf_env())
    return json.loads(found.stdout)


# ---- prompts: LlamaFactory's token ids against Zephyr's ------------------------------------------------

LF_IDS = r'''
import json, sys
from transformers import AutoTokenizer
from llamafactory.data.template import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments
model_dir, items = sys.argv[1], json.load(open(sys.argv[2]))
tokenizer = AutoTokenizer.from_pretrained(model_dir)
template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template=None))
out = []
for item in items:  # as LlamaFactory's alpaca converter builds messages from a record
    r, answer = item["record"], item["answer"]
    messages = []
    for user, assistant in r.get("history") or []:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    query = [x for x in (r["instruction"], r["input"]) if x]
    messages += [{"role": "user", "content": "\n".join(query)}, {"role": "assistant", "content": r[answer]}]
    prompt, response = template.encode_oneturn(tokenizer, messages, r.get("system") or "")
    out.append({"prompt": prompt, "full": prompt + response})
print(json.dumps(out))
'''


def compare_prompts(python: Path, model_dir: Path, mixtures: Path, info: dict, per_mixture: int, tmp: Path) -> dict:
    """Per mixture: how many records LlamaFactory tokenizes exactly as Zephyr's prompts (prompt and whole)."""
    from zephyr.model import modeldir, prompts

    tokenizer = modeldir.load_tokenizer(model_dir)
    items, ours = [], []
    for name, entry in info.items():
        if name.endswith("_validation"):
            continue
        answers = ["chosen", "rejected"] if entry.get("ranking") else ["output"]
        for record in json.loads((mixtures / entry["file_name"]).read_text())[:per_mixture]:
            for answer in answers:
                chat = prompts.messages(record)
                whole = chat + [{"role": "assistant", "content": record[answer]}]
                full = tokenizer.apply_chat_template(whole, tokenize=True, return_dict=True)["input_ids"]
                ours.append({"mixture": name, "prompt": prompts.prompt_ids(tokenizer, chat), "full": list(full)})
                items.append({"record": record, "answer": answer})
    path = tmp / "prompt_items.json"
    path.write_text(json.dumps(items))
    theirs = json.loads(subprocess.run([python, "-c", LF_IDS, model_dir, path], check=True, capture_output=True,
                                       text=True, env=lf_env()).stdout.splitlines()[-1])
    result: dict = {}
    for z, lf in zip(ours, theirs):
        same = result.setdefault(z["mixture"], {"sequences": 0, "same_prompt": 0, "same_sequence": 0})
        same["sequences"] += 1
        same["same_prompt"] += z["prompt"] == lf["prompt"]
        same["same_sequence"] += z["full"] == lf["full"]
    return result


# ---- training ------------------------------------------------------------------------------------------


def train(cli: Path, config: Path | str, overrides: list[str], log: Path, cwd: Path, output_dir: Path) -> dict:
    """Run `llamafactory-cli train` and read what it did from its log and output folder (its peak
    resident memory from GNU time)."""
    shutil.rmtree(output_dir, ignore_errors=True)
    maxrss = log.with_suffix(".maxrss")
    start = time.perf_counter()
    with log.open("w") as handle:
        command = ["/usr/bin/time", "-f", "%M", "-o", str(maxrss), str(cli), "train", str(config), *overrides]
        rc = subprocess.run(command, cwd=cwd, env=lf_env(), stdout=handle, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    examples = [int(n.replace(",", "")) for n in re.findall(r"Num examples = ([\d,]+)", text)]
    result = {"returncode": rc, "wall_seconds": round(wall, 1), "log": str(log),
              "peak_mb": int(maxrss.read_text().split()[-1]) / 1024,
              "train_examples": examples[0] if examples else None,
              "eval_examples": examples[1] if len(examples) > 1 else None}
    state = output_dir / "trainer_state.json"
    if state.is_file():
        history = json.loads(state.read_text())
        losses = [e["loss"] for e in history["log_history"] if "loss" in e]
        result.update(steps=history["global_step"], losses=losses, tokens=history.get("num_input_tokens_seen"))
    for name in ("train_results.json", "eval_results.json"):
        if (output_dir / name).is_file():
            result.update(json.loads((output_dir / name).read_text()))
    result["trained"] = rc == 0 and result.get("steps", 0) > 0 and (output_dir / "adapter_model.safetensors").is_file()
    if rc != 0:
        errors = [line for line in text.splitlines() if re.search(r"Error|error:", line)]
        result["error"] = errors[-1] if errors else text.splitlines()[-1:]
    return result


def check_mixtures(cli: Path, workdir: Path, model_dir: Path, mixtures_dir: Path, info: dict, steps: int,
                   out: Path) -> dict:
    """Train `steps` steps on each SFT and ranking mixture, with a config from zephyr.model.llamafactory."""
    from zephyr.model import llamafactory

    results = {}
    for name, entry in info.items():
        if name.endswith("_validation"):
            continue
        trainer = "dpo" if entry.get("ranking") else "sft"
        hyper = {"trainer": trainer, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                 "learning_rate": 1e-4, "lr_scheduler_type": "constant", "max_steps": steps, "max_length": 256,
                 "logging_steps": 1, "save_strategy": "no", "eval_steps": 10**6, "per_device_eval_batch_size": 4}
        # (evaluated once, after training: LlamaFactory evaluates the eval set when training ends)
        path = out / "mixtures" / f"{name}.yaml"
        config = llamafactory.write_run_config(path, f"check/{name}", {"data": name, "parent": "M0", "seed": 0}, hyper,
                                               base_manifest=model_dir / "manifest.json",
                                               dataset_info=mixtures_dir / "dataset_info.json")
        print(f"-- mixture {name} ({trainer})", flush=True)
        results[name] = {"stage": trainer, "eval_dataset": config.get("eval_dataset"),
                         **train(cli, path, [], out / "mixtures" / f"{name}.log", workdir, out / "mixtures" / name)}
        print(summary_line(name, results[name]), flush=True)
    return results


def check_runs(cli: Path, workdir: Path, layout, runs: list[str], steps: int, out: Path) -> dict:
    """Train each run's workflow-written YAML for `steps` steps, as a user would (from `workdir`)."""
    import yaml

    results = {}
    for run_name in runs:
        config = Path(layout.llamafactory(*run_name.split("/")))
        settings = yaml.safe_load((workdir / config).read_text())
        overrides = [f"max_steps={steps}", f"save_steps={steps}", f"eval_steps={10**6}"]  # evaluated at the end
        print(f"-- run {run_name}: llamafactory-cli train {config} {' '.join(overrides)}", flush=True)
        log = out / "runs" / f"{run_name.replace('/', '_')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        results[run_name] = {"stage": settings["stage"], "dataset": settings["dataset"],
                             "adapters": settings.get("adapter_name_or_path"),
                             **train(cli, config, overrides, log, workdir, workdir / settings["output_dir"])}
        print(summary_line(run_name, results[run_name]), flush=True)
    return results


def summary_line(name: str, r: dict) -> str:
    if not r["trained"]:
        return f"{name:<22} FAILED ({r.get('error')}); log {r['log']}"
    per_step = r.get("train_runtime", r["wall_seconds"]) / max(r["steps"], 1)
    eval_part = f", eval {r['eval_examples']} examples, eval_loss {r['eval_loss']:.4f}" if "eval_loss" in r else ""
    losses = ", ".join(f"{x:.4f}" for x in r.get("losses", []))
    return (f"{name:<22} loaded {r['train_examples']} examples{eval_part}; trained {r['steps']} steps "
            f"({per_step:.1f} s/step, {r['wall_seconds']:.0f} s with start-up), loss {losses}")


def snakemake_targets(workdir: Path, configfile: Path, targets: list[str]) -> None:
    snakemake = Path(sys.executable).with_name("snakemake")
    run([snakemake, *targets, "--snakefile", ROOT / "Snakefile", "--directory", workdir, "--configfile", configfile,
         "--cores", "2", "--quiet", "rules"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path.cwd(),
                        help="the experiment's directory (results/, resources/)")
    parser.add_argument("--configfile", type=Path, default=ROOT / "config.yaml")
    parser.add_argument("--venv", type=Path, default=Path("/work/lf-venv"), help="LlamaFactory's venv")
    parser.add_argument("--model", default="qwen", help="the model slot whose base model trains")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--runs", nargs="*", default=None,
                        help="model/variant runs whose YAMLs to train (default: every run of --model)")
    parser.add_argument("--prompts", type=int, default=8, help="records per mixture in the prompt comparison")
    parser.add_argument("--out", type=Path, default=None,
                        help="logs and adapters (default: WORKDIR/llamafactory-check)")
    parser.add_argument("--setup-only", action="store_true", help="build (or reuse) the venv, print its versions, stop")
    args = parser.parse_args(argv)
    if args.setup_only:
        print("LlamaFactory venv", args.venv, versions(ensure_venv(args.venv)))
        return
    workdir = args.workdir.resolve()
    out = (args.out or workdir / "llamafactory-check").resolve()
    out.mkdir(parents=True, exist_ok=True)

    from zephyr import studies

    with contextlib.chdir(workdir):  # the study's paths (a local source's fingerprint) as the workflow sees them
        cfg, layout = studies.load(args.configfile.resolve())
        base_manifest = layout.base_model(args.model)
    runs = args.runs if args.runs is not None else [
        f"{args.model}/{v}" for v, spec in cfg["variants"].items() if args.model in spec["models"]]
    python = ensure_venv(args.venv)
    cli = args.venv / "bin" / "llamafactory-cli"
    found = versions(python)
    print("LlamaFactory venv", args.venv, found, flush=True)

    snakemake_targets(workdir, args.configfile.resolve(), [
        layout.dataset_info(), base_manifest, *[layout.llamafactory(*r.split("/")) for r in runs]])
    mixtures = workdir / Path(layout.dataset_info()).parent
    info = json.loads((mixtures / "dataset_info.json").read_text())
    model_dir = workdir / Path(base_manifest).parent

    same = compare_prompts(python, model_dir, mixtures, info, args.prompts, out)
    for name, counts in same.items():
        print(f"prompts {name:<14} LlamaFactory's token ids = Zephyr's for "
              f"{counts['same_prompt']}/{counts['sequences']} "
              f"prompts, {counts['same_sequence']}/{counts['sequences']} whole sequences", flush=True)
    results = {"versions": found, "venv": str(args.venv), "workdir": str(workdir), "steps": args.steps,
               "prompts": same, "mixtures": check_mixtures(cli, workdir, model_dir, mixtures, info, args.steps,
                                                                      out)}
    results["runs"] = check_runs(cli, workdir, layout, runs, args.steps, out)
    (out / "summary.json").write_text(json.dumps(results, indent=1))

    print(f"\nLlamaFactory {found['llamafactory']} (torch {found['torch']}, transformers {found['transformers']}, "
          f"trl {found['trl']}, peft {found['peft']}, datasets {found['datasets']})")
    failed = []
    for kind in ("mixtures", "runs"):
        for name, r in results[kind].items():
            print(f"{kind[:-1]:<8}{summary_line(name, r)}")
            if not r["trained"]:
                failed.append(name)
    print(f"summary: {out / 'summary.json'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
