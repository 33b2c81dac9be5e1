# lib.sh — what the shell tests share. Sourced after `src` (the source tree)
# is set: . "$src/tests/lib.sh"

# One line and exit 1: meson counts the test as failed.
fail() { echo "FAIL: $*"; exit 1; }

# Exits 77 (meson: skipped) where Debian's Fashion-MNIST is not installed.
need_fmnist() {
  if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "SKIP: dataset-fashion-mnist is not installed (scripts/install-deps.sh installs it)"
    exit 77
  fi
}

# fmnist_split DIR TRAIN TEST: DIR/train and DIR/test, TRAIN and TEST real
# JPEGs per class (scripts/make_fmnist.py).
fmnist_split() {
  /usr/bin/python3 "$src/scripts/make_fmnist.py" --out "$1" --train-per-class "$2" --test-per-class "$3" >/dev/null
}
