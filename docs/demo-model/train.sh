#!/usr/bin/env bash
# Reproduce the demo model (docs/demo-model.md). Run from the repository root; SHARED is the folder holding
# he/, wsi/ and pairs/ (the project's shared real-data folder). ~30-45 min on a shared 2-core CPU.
set -euo pipefail
SHARED=${1:-../shared/data}
WORK=${2:-/tmp/virtual-ihc-demo}
python docs/demo-model/prepare_data.py "$SHARED" "$WORK/data"
OMP_NUM_THREADS=1 virtual-ihc-train fit --preset cyclegan --unpaired "$WORK/data/HE" "$WORK/data/IHC" \
  --run-dir "$WORK/run" \
  --set data.crop_size=128 --set data.rot90=true --set data.mpp=0.5 --set data.num_workers=0 \
  --set "model.arch_kwargs={n_blocks: 4, ngf: 16, norm: instance, use_dropout: false}" --set model.ndf=32 \
  --set optim.lr=2e-4 --set optim.n_epochs=4 --set optim.n_epochs_decay=4 \
  --set train.log_every=10 --set train.checkpoint_every=200 --set train.tensorboard=false \
  --set "data.description=demo: real public H&E (he/, wsi/, pairs/) vs DAB IHC (pairs/ pan-cytokeratin, proSPC; skimage)"
virtual-ihc-train export "$WORK/run" --out src/napari_virtual_ihc/models/demo/demo-he-to-dab.safetensors \
  --name "demo model, not HER2 (H&E -> DAB-IHC appearance)"
