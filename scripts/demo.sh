#!/bin/sh
# The README's first command: install, build, and run the demo.
set -eu
cd "$(dirname "$0")/.."
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
if [ "$(id -u)" = 0 ]; then
  sh scripts/install-deps.sh
else
  echo "demo: not root; assuming the packages of scripts/install-deps.sh are installed"
fi
[ -d build ] || meson setup build
ninja -C build
./build/d2v version
./build/tests/crosscheck_export build/demo
./build/d2v inspect build/demo/case0_post_ln_instance_none_linear.safetensors | head -20
