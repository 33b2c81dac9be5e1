#!/bin/sh
# The README's first command: install the packages, build, build a small
# real dataset, pretrain a micro encoder with data2vec for a few minutes, and
# compare k-NN accuracy against the same network untrained.
#   sh scripts/demo.sh          images: Fashion-MNIST as JPEG files, image_micro
#   sh scripts/demo.sh speech   speech: spoken digits by espeak-ng, speech_micro
# DEMO_STEPS overrides the length (default 300 steps: about 4 minutes on 2
# cores for either modality).
set -eu
cd "$(dirname "$0")/.."
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
modality="${1:-image}"
steps="${DEMO_STEPS:-300}"
case "$modality" in
  image) config=configs/image_micro.ini data=data/fmnist ;;
  speech) config=configs/speech_micro.ini data=data/words ;;
  *) echo "usage: sh scripts/demo.sh [image|speech]" >&2; exit 2 ;;
esac
if [ "$(id -u)" = 0 ]; then
  sh scripts/install-deps.sh
else
  echo "demo: not root; assuming the packages of scripts/install-deps.sh are installed"
fi
[ -d build ] || meson setup build
ninja -C build
./build/d2v version
if [ ! -d "$data/train" ]; then
  if [ "$modality" = image ]; then
    /usr/bin/python3 scripts/make_fmnist.py --out "$data"
  else
    /usr/bin/python3 scripts/make_words.py --out "$data"
  fi
fi
rm -rf "runs/demo_$modality"
./build/d2v pretrain "$config" --data "$data/train" --run "runs/demo_$modality" \
  --set train.steps="$steps" --set train.log_every=25
echo "== k-NN on the $modality test split: untrained, then pretrained"
./build/d2v eval knn --random-init "$config" --train "$data/train" --test "$data/test"
./build/d2v eval knn --checkpoint "runs/demo_$modality/last.safetensors" --train "$data/train" --test "$data/test"
