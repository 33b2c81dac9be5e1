#!/bin/sh
# The Debian 12 packages d2v needs to build, test and run its demos (as root).
# One list, used by the README's first command and by CI. The translated
# man pages (manpages-de ... manpages-cs) only serve make_text_langid.py.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  gcc libc6-dev meson ninja-build pkg-config \
  libopenblas-openmp-dev libjpeg62-turbo-dev libsndfile1-dev libsoxr-dev \
  libutf8proc-dev libinih-dev libjansson-dev libpng-dev libfftw3-dev \
  libopenmpi-dev openmpi-bin \
  python3-torch python3-numpy python3-pil python3-regex \
  dataset-fashion-mnist espeak-ng sox \
  bible-kjv fortunes fortunes-min jargon-text manpages groff-base wordnet-base \
  manpages-de manpages-es manpages-fr manpages-it manpages-nl manpages-pl manpages-pt-br manpages-ru \
  manpages-cs \
  clang libclang-rt-dev libomp-dev valgrind >/dev/null
# clang, its runtime (libFuzzer, sanitizers) and its OpenMP: the fuzz build
# (tests/fuzz/run_all.sh, meson -Dfuzz=true) that CI runs. Open MPI: the
# data-parallel build (meson -Dmpi=auto finds it) and its tests. valgrind:
# tests/valgrind.sh, which CI runs.
