#!/bin/sh
# attention_vs_torch.sh - fused attention forward+backward, igpt (pure Go, CGO_ENABLED=0) against eager
# PyTorch softmax attention (bench/torch_attention.py, Debian's torch, OpenMP OpenBLAS as in
# ../shared/bench/torch_train_step.py), at B8 H4 T1024 hd64, causal and not, 1 and 2 threads.
#
# Usage: bench/attention_vs_torch.sh [ITERS]      (THREADS="1 2" by default)
set -eu
cd "$(dirname "$0")/.."
ITERS=${1:-10}
THREADS=${THREADS:-"1 2"}
PY=/usr/bin/python3
if ! $PY -c 'import torch' 2>/dev/null; then
    apt-get install -y python3-torch >/dev/null
fi
CGO_ENABLED=0 go build -o /tmp/igpt_attention ./bench/attention
for t in $THREADS; do
    for c in causal full; do
        if [ $c = causal ]; then gf=-causal=true; pf=; else gf=-causal=false; pf=--no-causal; fi
        tl=$($PY bench/torch_attention.py --threads "$t" --iters "$ITERS" $pf | grep '^torch')
        gl=$(/tmp/igpt_attention -threads "$t" -iters "$ITERS" $gf | grep '^go')
        echo "$tl"
        echo "$gl"
        echo "$tl" "$gl" | awk '{ for (i = 1; i <= NF; i++) if ($i == "fwd+bwd") v[++n] = $(i + 1);
            printf "speed-up Go/torch fwd+bwd: %.2fx\n\n", v[1] / v[2] }'
    done
done
