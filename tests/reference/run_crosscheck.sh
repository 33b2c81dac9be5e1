#!/bin/sh
# Runs the C exporter, then the PyTorch reference over what it wrote.
# Exit 77 (meson's "skipped") comes from crosscheck.py when torch is absent,
# and it says so on its output: a skip is never silent.
set -eu
exporter=$1 outdir=$2 script=$3
rm -rf "$outdir"
"$exporter" "$outdir"
exec /usr/bin/python3 "$script" "$outdir"/*.safetensors
