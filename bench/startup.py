"""Start-up of each job: the seconds a fresh process takes to import what its script and the functions it
calls import, with bitsandbytes as each job now decides (zephyr/model/bnb.py) and as every job imported it before.

    .venv/bin/python -m bench.startup                          # every job kind, best of 3 (~5 minutes on 2 cores)
    .venv/bin/python -m bench.startup --repeat 5 --jobs merge_adapter train_adapter

A job kind is its script's zephyr imports, then the libraries its functions import (listed in `JOBS`, read
off a run of each on tiny models: `import` statements only, no model is loaded), run as `python -c`.
"before" imports them as every job did until bitsandbytes was decided per job; "after" first calls
`bnb.for_job` as the script does. Runs are interleaved, so that a busy machine slows both alike; each
figure is the best of --repeat wall times, the interpreter's own start included (`python -c pass`, the
first row). The columns after the times say whether the process ended with bitsandbytes, and with
torch._inductor.compile_fx (what bitsandbytes' `torch.compile` imports), as before / after. Not a test: it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "import torch; from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen2ForCausalLM"
BNB = "from transformers import BitsAndBytesConfig; import bitsandbytes, transformers.integrations.bitsandbytes"
EVALUATE = ("from zephyr import devices, logs, study; from zephyr.evaluation import tasks; "
            "from zephyr.includes import include_tasks; from zephyr.model import bnb")
SCORE = "from zephyr import devices, logs; from zephyr.evaluation import tasks; from zephyr.model import bnb"
TRAIN = "from zephyr import devices, logs; from zephyr.model import bnb, hyperparameters, training"
TRAINING = ("import datasets, pandas, torch; from transformers import AutoConfig, Qwen2ForCausalLM; "
            "from trl import DPOTrainer, SFTTrainer; from peft import LoraConfig")
#: job kind → (the script's imports, its functions' library imports, whether it uses bitsandbytes: its
#: `bnb.for_job` argument; None: its script decides nothing).
JOBS = {
    "python -c pass": ("pass", "pass", None),
    "draw_mixture": ("from zephyr import logs; from zephyr.data import mixtures", "pass", None),
    "fetch_model": ("from zephyr import devices, logs; from zephyr.model import fetch", MODEL, None),
    "score_pairs": (SCORE, MODEL, False),
    "evaluate": (EVALUATE, MODEL, False),
    "evaluate nf4": (EVALUATE, f"{MODEL}; {BNB}", True),
    "evaluate as-trained": (EVALUATE, f"{MODEL}; from peft import PeftModel; {BNB}", True),
    "export_quantized": ("from zephyr import devices, logs; from zephyr.model import bnb, quantize", f"{MODEL}; {BNB}",
                         True),
    "merge_adapter": ("from zephyr import devices, logs; from zephyr.model import bnb, merge",
                      f"{MODEL}; from peft import PeftModel", False),
    "train_adapter": (TRAIN, TRAINING, False),
    "train_adapter qlora": (TRAIN, f"{TRAINING}, prepare_model_for_kbit_training; {BNB}", True),
    "llamafactory_config": ("from zephyr import logs; from zephyr.model import bnb, llamafactory",
                            "from transformers import TrainingArguments; from trl import DPOConfig, SFTConfig", False),
}
REPORT = ("import json, sys; print('MODULES ' + json.dumps([sys.modules.get(m) is not None "
          "for m in ('bitsandbytes', 'torch._inductor.compile_fx')]))")


def statement(job: str, after: bool) -> str:
    script, libraries, needed = JOBS[job]
    decide = f"bnb.for_job({needed}); " if after and needed is not None else ""
    return f"{script}; {decide}{libraries}; {REPORT}"


def run(code: str) -> tuple[float, list[bool]]:
    """Wall seconds of `python -c code` in the checkout (HF offline), and what it reported."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{code}\n{result.stderr[-3000:]}")
    return wall, json.loads(result.stdout.rsplit("MODULES ", 1)[1])


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is shown")
    parser.add_argument("--jobs", nargs="+", choices=list(JOBS), default=list(JOBS), metavar="JOB",
                        help=f"job kinds (default: all of {', '.join(JOBS)})")
    args = parser.parse_args(argv)
    print(f"{cpu()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, best of {args.repeat}; "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    print(f"{'job':22} {'before s':>9} {'after s':>9} {'saved s':>9}   bitsandbytes  compile_fx")
    for job in args.jobs:
        best = {False: float("inf"), True: float("inf")}
        seen = {}
        for _ in range(args.repeat):
            for after in (False, True):
                wall, seen[after] = run(statement(job, after))
                best[after] = min(best[after], wall)
        flags = ["/".join("yes" if seen[a][i] else "no" for a in (False, True)) for i in range(2)]
        print(f"{job:22} {best[False]:9.2f} {best[True]:9.2f} {best[False] - best[True]:9.2f}   "
              f"{flags[0]:>12}  {flags[1]:>10}", flush=True)


if __name__ == "__main__":
    main()
