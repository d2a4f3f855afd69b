#!/usr/bin/env bash
# The GPU checks in one go, on a machine with CUDA (under 8 minutes on one H100/H200):
#   1. the GPU-marked tests (tests/test_gpu.py);
#   2. two epochs of every registered model on cuda, through the CLI;
#   3. a DDP smoke run on all visible GPUs (NCCL; one GPU is fine);
#   4. the step-overhead benchmark on cuda (dense, conv, resnet): Pyro's handlers every step
#      (uncaptured), the captured program replayed (engine, the default) and compiled
#      (the captured Pyro program compiled by torch.compile, replayed as CUDA graphs).
# Prints one table; logs go to ${OUT:-/tmp}/gpu_check/.
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
logs="${OUT:-/tmp}/gpu_check"
mkdir -p "$logs"
runs="$(mktemp -d)"
rows=()
row() { rows+=("| $1 | $2 | $3 |"); }
stamp() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }

python -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.cuda.get_device_name(0), torch.cuda.device_count(), 'GPU(s), torch', torch.__version__)" || exit 1

t0=$(stamp)
python -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider > "$logs/gpu_tests.log" 2>&1
status=$?
row "GPU-marked tests" "$(tail -1 "$logs/gpu_tests.log")" "$(secs "$t0" "$(stamp)") s"
[ $status -eq 0 ] || echo "GPU tests failed: see $logs/gpu_tests.log"

models=$(python -c "from pyro_vae import MODELS, FLOW_MODELS; print(' '.join(MODELS.names() + FLOW_MODELS.names()))")
for m in $models; do
    t0=$(stamp)
    extra=""
    case $m in nice|realnvp|glow) extra="--binarize none";; linear) extra="--binarize none";; esac
    if python -m inference.cli train --model "$m" $extra --epochs 2 --iwae-samples 100 --device cuda \
        --no-progress --out "$runs/$m" > "$logs/train_$m.log" 2>&1; then
        row "2 epochs of $m on cuda" "$(grep -E 'ELBO|log-likelihood' "$logs/train_$m.log" | tail -1 | cut -c1-90)" "$(secs "$t0" "$(stamp)") s"
    else
        row "2 epochs of $m on cuda" "FAILED: $(tail -1 "$logs/train_$m.log" | cut -c1-80)" "$(secs "$t0" "$(stamp)") s"
    fi
done

n=$(python -c "import torch; print(torch.cuda.device_count())")
t0=$(stamp)
if python -m torch.distributed.run --standalone --nproc_per_node="$n" -m inference.cli train --model conv \
    --epochs 2 --device cuda --no-progress --out "$runs/ddp" > "$logs/ddp.log" 2>&1; then
    row "DDP smoke, conv, $n GPU(s), NCCL" "$(grep 'ELBO' "$logs/ddp.log" | tail -1 | cut -c1-90)" "$(secs "$t0" "$(stamp)") s"
else
    row "DDP smoke, conv, $n GPU(s), NCCL" "FAILED: $(tail -1 "$logs/ddp.log" | cut -c1-80)" "$(secs "$t0" "$(stamp)") s"
fi

for m in dense conv resnet; do
    t0=$(stamp)
    python benchmarks/svi_overhead.py --device cuda --model "$m" --variants uncaptured engine compiled \
        --rounds 9 --steps 30 > "$logs/overhead_$m.log" 2>&1
    # the table's rows: "| pyro VARIANT | ms | ratio (IQR) |" → "VARIANT ms ms, ratio"
    ratios=$(grep -E '^\| pyro ' "$logs/overhead_$m.log" | awk -F'|' '{gsub(/ *pyro /, "", $2); gsub(/ +$/, "", $2); gsub(/^ +| +$/, "", $3); gsub(/^ +| +$/, "", $4); printf "%s%s %s ms, %s", sep, $2, $3, $4; sep="; "}')
    row "step overhead, $m, batch 128, cuda" "${ratios:-FAILED: see $logs/overhead_$m.log} (hand: $(grep '^| hand-written' "$logs/overhead_$m.log" | cut -d'|' -f3 | tr -d ' ') ms)" "$(secs "$t0" "$(stamp)") s"
done

echo
echo "| check | result | time |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
rm -rf "$runs"
