#!/bin/sh
# The README's first command: install the packages, build, build a small
# real dataset, pretrain a micro encoder with data2vec for a few minutes, and
# compare k-NN accuracy against the same network untrained.
#   sh scripts/demo.sh          images: Fashion-MNIST as JPEG files, image_micro
#   sh scripts/demo.sh speech   speech: spoken digits by espeak-ng, speech_micro
#   sh scripts/demo.sh text     text: an English corpus from Debian packages,
#                               a 4096-token BPE, text_micro pretrained on
#                               WordNet glosses (test synsets left out); k-NN
#                               on WordNet definitions by topic
# DEMO_STEPS overrides the length (default 300 steps: about 4 minutes on 2
# cores for image or speech).
set -eu
cd "$(dirname "$0")/.."
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
modality="${1:-image}"
steps="${DEMO_STEPS:-300}"
case "$modality" in
  image) config=configs/image_micro.ini data=data/fmnist ;;
  speech) config=configs/speech_micro.ini data=data/words ;;
  text) config=configs/text_micro.ini data=data/text ;;
  *) echo "usage: sh scripts/demo.sh [image|speech|text]" >&2; exit 2 ;;
esac
# What is pretrained on, and the labeled splits the k-NN probe uses.
pretrain_data="$data/train" probe_train="$data/train" probe_test="$data/test"
if [ "$modality" = text ]; then
  pretrain_data=data/glosses/glosses.txt probe_train=data/topic/train.tsv probe_test=data/topic/test.tsv
fi
if [ "$(id -u)" = 0 ]; then
  sh scripts/install-deps.sh
else
  echo "demo: not root; assuming the packages of scripts/install-deps.sh are installed"
fi
[ -d build ] || meson setup build
ninja -C build
./build/d2v version
if [ ! -e "$pretrain_data" ]; then
  case "$modality" in
    image) /usr/bin/python3 scripts/make_fmnist.py --out "$data" ;;
    speech) /usr/bin/python3 scripts/make_words.py --out "$data" ;;
    text)
      /usr/bin/python3 scripts/make_text_corpus.py --out "$data"
      /usr/bin/python3 scripts/make_text_topic.py --out data/topic
      /usr/bin/python3 scripts/make_text_glosses.py --out data/glosses/glosses.txt --test data/topic/test.tsv
      ./build/d2v tokenizer train --vocab-size 4096 --out "$data/tokenizer-4096" "$data/corpus.txt" ;;
  esac
fi
rm -rf "runs/demo_$modality"
./build/d2v pretrain "$config" --data "$pretrain_data" --run "runs/demo_$modality" \
  --set train.steps="$steps" --set train.log_every=25
echo "== k-NN on the $modality test split: untrained, then pretrained"
./build/d2v eval knn --random-init "$config" --train "$probe_train" --test "$probe_test"
./build/d2v eval knn --checkpoint "runs/demo_$modality/last.safetensors" --train "$probe_train" --test "$probe_test"
