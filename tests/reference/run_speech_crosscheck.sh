#!/bin/sh
# Runs the C speech front-end exporter, then the PyTorch reference over what
# it wrote. Exit 77 (meson's "skipped") comes from speech_crosscheck.py when
# torch is absent, and it says so on its output: a skip is never silent.
set -eu
exporter=$1 outdir=$2 script=$3
rm -rf "$outdir"
"$exporter" "$outdir"
exec /usr/bin/python3 "$script" "$outdir"/*.safetensors
