#!/usr/bin/env bash
# The GPU check, in one call to a GPU machine without network (issue 10's figures), from the repository
# root with .gpu/ built here first (`.venv/bin/python -m bench.gpu.payload`):
#
#   device run: command "bash bench/gpu/check.sh", carry [".gpu"], timeout_s 540 (stages at most 8 minutes)
#
# Stages, in turn so that each has the GPU alone (STAGES picks some, e.g. STAGES="study tests" to rerun):
#   bench  training throughput on the Qwen1.5-0.5B shape, Table 2's set, today's settings against auto
#   study  the tiny study with compute.gpus: 1 (QLoRA, merges, NF4/int8 exports, every evaluation), timed
#   tests  the model-side tests, on CUDA
# Each stage has its own time limit (BENCH_S, STUDY_S, TEST_S); what each printed lands in $OUT.
# On a CPU, to try this script: NO_INSTALL=1 PY=.venv/bin/python GPUS=0 BENCH_ARGS="--shape small --steps 2" ...
set -u
OUT=${OUT:-/tmp/gpu-check}
ROOT=$PWD
PY=${PY:-python3}
case $PY in /*) ;; */*) PY=$ROOT/$PY ;; esac  # the study runs from its own folder
STAGES=${STAGES:-bench study tests}
BENCH_ARGS=${BENCH_ARGS:---shape qwen1.5-0.5b --batch 16 --accumulation 8 --max-length 2048 --steps 8 --dpo-steps 6}
SETTINGS=${SETTINGS:-today auto}  # bench.bench_train's settings, e.g. "today auto grouped"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0)) s] $*"; }
[ -d .gpu/tiny ] || { echo "no .gpu/ here: build it with python -m bench.gpu.payload and carry it" >&2; exit 2; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ -z "${NO_INSTALL:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
    >"$OUT/pip.txt" 2>&1 || { tail -5 "$OUT/pip.txt"; exit 1; }
  export PYTHONPATH=/tmp/site:$ROOT PATH=/tmp/site/bin:$PATH
else
  export PYTHONPATH=$ROOT PATH=$(dirname "$PY"):$PATH
fi
"$PY" -c "import torch, transformers, trl, peft, bitsandbytes, datasets, snakemake
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__,
      '| trl', trl.__version__, '| peft', peft.__version__, '| bitsandbytes', bitsandbytes.__version__,
      '| datasets', datasets.__version__, '| snakemake', snakemake.__version__)" 2>&1 | grep -v kernels
stamp "installed"

case " $STAGES " in *" bench "*)
  timeout "${BENCH_S:-240}" "$PY" -m bench.bench_train $BENCH_ARGS --settings $SETTINGS --work /tmp/zbench \
    >"$OUT/bench.txt" 2>&1
  echo "bench exit $?" >>"$OUT/bench.txt"
  grep -v -E "^(\s*$|.*Warning|.*warn)" "$OUT/bench.txt" | cut -c1-300 | tail -15
  stamp "bench done" ;;
esac

case " $STAGES " in *" study "*)
  rm -rf /tmp/tiny && cp -r .gpu/tiny /tmp/tiny
  echo "compute: {gpus: ${GPUS:-1}}" >/tmp/tiny/gpus.yaml
  start=$(date +%s)
  (cd /tmp/tiny && timeout "${STUDY_S:-120}" "$PY" -m snakemake --snakefile "$ROOT/Snakefile" --directory /tmp/tiny \
    --configfile /tmp/tiny/config.yaml /tmp/tiny/gpus.yaml --cores 16 --scheduler greedy >"$OUT/study.txt" 2>&1)
  echo "study exit $? after $(($(date +%s) - start)) s" >>"$OUT/study.txt"
  tail -n 3 "$OUT/study.txt"
  (cd /tmp/tiny && cat results/table1.csv 2>/dev/null
   for f in results/adapters/*/*/summary.json; do
     [ -f "$f" ] || continue
     "$PY" -c "import json, sys; s = json.load(open(sys.argv[1])); print(sys.argv[1], s['device'], s['tokens_per_second'], 'tokens/s', s['peak_memory_mb'], 'MB')" "$f"
   done
   grep -l -i -E "traceback|error" logs/*/*.log logs/*/*/*.log 2>/dev/null | head
   tar czf "$OUT/study-logs.tgz" logs results/*.csv results/adapters/*/*/summary.json 2>/dev/null)
  stamp "study done" ;;
esac

case " $STAGES " in *" tests "*)
  timeout "${TEST_S:-100}" "$PY" -m pytest -v -p no:cacheprovider -m "not workflow and not slurm and not slow" \
    tests/test_speed.py tests/test_training.py tests/test_models.py tests/test_export.py tests/test_evaluation.py \
    tests/test_devices.py >"$OUT/tests.txt" 2>&1
  echo "tests exit $?" >>"$OUT/tests.txt"
  grep -E "(FAILED|ERROR|passed|failed)" "$OUT/tests.txt" | tail -n 25 | cut -c1-300
  stamp "tests done" ;;
esac
