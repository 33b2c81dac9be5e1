#!/bin/sh
# The README's first command: install the packages, build, build the image
# demo set (Fashion-MNIST as JPEG files), pretrain a micro ViT with data2vec
# for a few minutes, and compare k-NN accuracy against the same network
# untrained. DEMO_STEPS overrides the length (default 300 steps, ~4 minutes
# on 2 cores).
set -eu
cd "$(dirname "$0")/.."
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
steps="${DEMO_STEPS:-300}"
if [ "$(id -u)" = 0 ]; then
  sh scripts/install-deps.sh
else
  echo "demo: not root; assuming the packages of scripts/install-deps.sh are installed"
fi
[ -d build ] || meson setup build
ninja -C build
./build/d2v version
[ -d data/fmnist/train ] || /usr/bin/python3 scripts/make_fmnist.py --out data/fmnist
rm -rf runs/demo_image
./build/d2v pretrain configs/image_micro.ini --data data/fmnist/train --run runs/demo_image \
  --set train.steps="$steps" --set train.log_every=25
echo "== k-NN on the Fashion-MNIST test split: untrained, then pretrained"
./build/d2v eval knn --random-init configs/image_micro.ini --train data/fmnist/train --test data/fmnist/test
./build/d2v eval knn --checkpoint runs/demo_image/last.safetensors --train data/fmnist/train --test data/fmnist/test
