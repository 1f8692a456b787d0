#!/bin/bash
# usage: benchmarks/finetune_lr.sh LR... (from the repo root; runs in runs/ft-lr/)
# Fine-tuning learning rate (issue #34): 1 epoch of emonas-macro-lite on 600 images/class of FER2013 train,
# scored on PublicTest (lite's own: 67.23%), at several peak learning rates (sgd, batch 128).
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296
cd "$(dirname "$0")/.." && mkdir -p runs/ft-lr
for lr in "$@"; do
  rm -rf runs/ft-lr/lr$lr
  .venv/bin/emonas-edge train --model emonas-macro-lite --data ../shared/datasets/fer2013/train \
    --limit-per-class 600 --epochs 1 --lr $lr --threads 2 \
    --seed 0 --out runs/ft-lr/lr$lr > runs/ft-lr/lr$lr.log 2>&1
  .venv/bin/emonas-edge evaluate --model runs/ft-lr/lr$lr/last.pt --data ../shared/datasets/fer2013/publictest \
    --threads 2 --json runs/ft-lr/lr$lr.json > /dev/null 2>&1
  echo "lr $lr: PublicTest $(python3 -c "import json;print(json.load(open('runs/ft-lr/lr$lr.json'))['accuracy'])")"
done
