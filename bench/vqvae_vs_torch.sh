#!/bin/sh
# vqvae_vs_torch.sh - the VQ-VAE (default config: hidden 128, res_hidden 32, R 2, K 512, D 64, f 4) on
# 32x32x3 images, fp32 on the CPU: PyTorch (bench/vqvae_reference.py bench, Debian's python3-torch, oneDNN
# convolutions) against igpt's pure-Go vqvae package (bench/vqvae, CGO_ENABLED=0), same threads.
#   train step: batch 32, forward + backward + EMA codebook update + Adam
#   encode:     batch 256, encoder + nearest code
# Usage: bench/vqvae_vs_torch.sh   (THREADS=2, STEPS=20, FACTOR=4 by default)
# Prints both sides' JSON lines and the ratios Go/torch in images per second (> 1: Go is faster).
set -eu
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
STEPS=${STEPS:-20}
FACTOR=${FACTOR:-4}
PY=/usr/bin/python3
GO_BIN=/tmp/igpt_vqvae_bench
CGO_ENABLED=0 go build -o "$GO_BIN" ./bench/vqvae
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
. bench/cpu.sh
echo "# $(cpu_line); go $(go env GOVERSION); torch $($PY -c 'import torch; print(torch.__version__)'); threads $THREADS; $(date -u +%Y-%m-%dT%H:%MZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
ARGS="--threads $THREADS --steps $STEPS --factor $FACTOR"
$PY bench/vqvae_reference.py bench $ARGS | tee "$TMP/torch"
"$GO_BIN" $ARGS | tee "$TMP/go"
$PY - "$TMP/torch" "$TMP/go" <<'PYEOF'
import json, sys
t = {r['what']: r for r in map(json.loads, open(sys.argv[1]))}
g = {r['what']: r for r in map(json.loads, open(sys.argv[2]))}
for w in ('train_step', 'encode'):
    print(f"{w:10s}  torch {t[w]['images_per_s']:9.1f} img/s ({t[w]['ms']:.1f} ms)   "
          f"go {g[w]['images_per_s']:9.1f} img/s ({g[w]['ms']:.1f} ms)   go/torch {g[w]['images_per_s'] / t[w]['images_per_s']:.2f}x")
PYEOF
