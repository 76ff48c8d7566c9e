#!/usr/bin/env bash
# One short GPU check, made to fit a 10-minute loan of one H100: nothing is downloaded (the models are the
# published architectures with random weights made on the GPU, as `mora bench` makes them) and nothing outside the
# machine is needed. It writes benchmarks/RESULTS.md with:
#   1. one SDXL image (base + refiner, 1024x576, 40 steps) and one SVD-XT segment (25 frames at 1024x576, 25 steps)
#      at full size under each speed profile: exact (`ours`), fast, fastest; time per stage, peak memory, PSNR
#      against exact, the settings each profile applied (a warm-up run first: it pays torch.compile's compiling);
#   2. one fine-tuning step of the image-to-video agent (SVD-XT, LoRA and full) under the 24gb memory profile
#      (and the resident one, which `mora bench --training` runs beside it): step time and peak memory.
# Each part has its own time limit; a part that runs out is recorded as such and the rest still runs.
#
#   benchmarks/gpu_check.sh              # on the GPU machine, from anywhere in the repository
#   benchmarks/gpu_check.sh --dry-run    # the same commands on the CPU with the tiny models (a check of the script)
set -uo pipefail
cd "$(dirname "$0")/.."

device=cuda size=full out=benchmarks/RESULTS.md speed_limit=420 training_limit=150
extra=()
case "${1:-}" in
  "") ;;
  --dry-run)
    device=cpu size=tiny out=${2:-$(mktemp -d)/RESULTS.md}
    extra=(--speed-option compile=none)  # inductor's C++ builds take minutes on a small CPU; the code path is the same
    ;;
  *) echo "usage: benchmarks/gpu_check.sh [--dry-run [RESULTS.md]]" >&2; exit 2 ;;
esac
notes=()
if ! python -c "import torchao" 2>/dev/null; then
  extra+=(--speed-option quantize=none)
  notes+=("torchao is not installed (pip install 'mora-agents[speed]'): fastest ran without fp8 weights.")
fi
if [ "$device" = cuda ] && ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check: no CUDA device here (use --dry-run for the CPU check of the script)" >&2
  exit 2
fi
work=$(mktemp -d)
mkdir -p "$(dirname "$out")"
started=$SECONDS

part() {  # part NAME LIMIT_S COMMAND...: run a part under its time limit, keep its Markdown and its exit code
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit}s): $*" >&2
  local begin=$SECONDS
  timeout "$limit" "$@" --markdown "$work/$name.md" --json-out "$work/$name.json" >"$work/$name.out" 2>"$work/$name.err"
  local code=$?
  echo "$code $((SECONDS - begin))" >"$work/$name.status"
  [ "$code" = 0 ] || tail -5 "$work/$name.err" >&2
}

part speed "$speed_limit" mora bench --device "$device" --preset "$size" --workloads text_to_image,svd_segment \
  --no-approximate --no-reference --repeats 1 --warmup 1 --speed fast,fastest "${extra[@]}"
part training "$training_limit" mora bench --training --device "$device" --preset "$size" \
  --workloads image_to_video --memory-profile 24gb --repeats 1 --warmup 1

section() {  # section NAME TITLE: a part's table, or why there is none
  local name=$1 title=$2 code seconds
  read -r code seconds <"$work/$name.status"
  echo "## $title"
  echo
  if [ "$code" = 0 ]; then
    echo "(${seconds} s)"
    echo
    sed '1{/^# /d}' "$work/$name.md" | sed '/./,$!d'
  elif [ "$code" = 124 ]; then
    echo "Did not finish within its limit (${seconds} s)."
  else
    echo "Failed (exit code $code) after ${seconds} s:"
    echo
    echo '```'
    tail -5 "$work/$name.err"
    echo '```'
  fi
  echo
}

{
  echo "# GPU check"
  echo
  python - <<'EOF'
import datetime, diffusers, torch
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
print(f"{datetime.date.today()}, {name}, torch {torch.__version__}, diffusers {diffusers.__version__}; "
      "random weights at the published sizes (nothing downloaded).")
EOF
  echo
  for note in "${notes[@]}"; do echo "- $note"; done
  [ "${#notes[@]}" = 0 ] || echo
  section speed "SDXL image and SVD-XT segment per speed profile"
  section training "One fine-tuning step of the image-to-video agent, 24gb profile"
  echo "Whole check: $((SECONDS - started)) s."
} >"$out"
echo "gpu_check: wrote $out ($((SECONDS - started)) s)" >&2
