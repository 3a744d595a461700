#!/usr/bin/env bash
# The GPU checks in one command, for anyone with a CUDA machine (none runs in CI or on our dev
# machines): prints each figure, stops at the first failure, about 10 minutes in all.
#
#   benchmarks/gpu_check.sh            # from the repository root, after `make .venv/bin/.installed`
#
# 1. BiMPM training throughput on the GPU: fast vs plain matching, fp32 and bf16 autocast.
# 2. `repro stage full` on the BiMPM sample with trainer.accelerator=gpu trainer.precision=bf16-mixed
#    (in a throwaway clone: it records nothing here).
# 3. With 2 or more GPUs: the same full run with DDP on 2 GPUs, and its test metrics beside (2)'s.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$PWD/.venv/bin/python}  # absolute, not resolved: the venv's own interpreter
[ -x "$PY" ] || { echo "Error: $PY not found; run 'make .venv/bin/.installed' first" >&2; exit 1; }

gpus=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
echo "torch $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)'), GPUs: $gpus"
if [ "$gpus" -lt 1 ]; then
    echo "Error: torch sees no CUDA GPU here (torch.cuda.is_available() is False); nothing to check" >&2
    exit 1
fi
"$PY" -c "import torch; [print(f'  cuda:{i}', torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]"

echo
echo "== 1/3 BiMPM throughput on cuda (fast vs plain; fp32 and bf16 autocast)"
timeout 240 "$PY" benchmarks/bimpm_throughput.py --device cuda --impls fast,plain --rounds 5 --batch 64

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q . "$work/r"
run_full() {  # $1: label, rest: overrides
    local label=$1
    shift
    # PYTHONPATH: the clone's repro, ahead of the editable install of this checkout
    (cd "$work/r" && PYTHONPATH="$work/r" timeout 240 "$PY" -m repro stage full --paper bimpm \
        --force "$@" > "$work/$label.log" 2>&1) || { tail -30 "$work/$label.log"; return 1; }
    grep -E "^seed .*: trained at|^full: (PASS|FAIL)" "$work/$label.log" || true
    "$PY" - "$work/r" "$label" <<'EOF'
import json, sys
from pathlib import Path
runs = sorted((Path(sys.argv[1]) / "runs/bimpm/full").glob("2*"), key=lambda p: p.name)
rec = json.loads((runs[-1] / "record.json").read_text())
m, a = rec["metrics"]["mean"], rec.get("actual") or {}
print(f"  {sys.argv[2]}: test/acc {m.get('test/acc', float('nan')):.2f}, val/acc "
      f"{m.get('val/acc', float('nan')):.2f}, {a.get('epochs')} epochs in {a.get('train_s')} s "
      f"({a.get('s_per_epoch')} s/epoch), device {rec['env'].get('device', {}).get('device_name')}")
EOF
}

echo
echo "== 2/3 full on the BiMPM sample: 1 GPU, bf16-mixed"
run_full one-gpu trainer.accelerator=gpu trainer.devices=1 trainer.precision=bf16-mixed trainer.max_epochs=3

echo
if [ "$gpus" -ge 2 ]; then
    echo "== 3/3 full on the BiMPM sample: 2 GPUs, DDP, bf16-mixed"
    run_full two-gpu trainer.accelerator=gpu trainer.devices=2 trainer.strategy=ddp \
        trainer.precision=bf16-mixed trainer.max_epochs=3
else
    echo "== 3/3 skipped: one GPU (the DDP check needs 2)"
fi
echo
echo "GPU checks done."
