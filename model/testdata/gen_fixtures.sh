#!/bin/sh
# gen_fixtures.sh - regenerate the reference fixtures of model/reference_test.go with the PyTorch
# reference ../shared/bench/igpt_reference.py (Debian's /usr/bin/python3 with python3-torch).
#   model/testdata/gen_fixtures.sh          (from the repository root or anywhere)
# Model: L2 d48 H4 T20 V40 (odd sizes: head dim 12, T not a multiple of any tile), test init seed 1;
# inputs: 3 sequences, seed 2, BERT mask p = 0.15. Outputs in float64 (--float64) as safetensors.
set -eu
cd "$(dirname "$0")"
PY=${PY:-/usr/bin/python3}
REF=${REF:-../../../shared/bench/igpt_reference.py}
export PYTHONDONTWRITEBYTECODE=1
$PY $REF init --layers 2 --d 48 --heads 4 --seq 20 --vocab 40 --seed 1 --out ref_model.safetensors
$PY $REF inputs --batch 3 --seq 20 --vocab 40 --seed 2 --out ref_tokens.npy --mask-out ref_mask.npy
$PY $REF logits --model ref_model.safetensors --tokens ref_tokens.npy --out ref_logits_ar.safetensors --float64
$PY $REF logits --model ref_model.safetensors --tokens ref_tokens.npy --bert-mask ref_mask.npy \
    --out ref_logits_bert.safetensors --float64
$PY $REF grads --model ref_model.safetensors --tokens ref_tokens.npy --out ref_grads_ar.safetensors --float64
$PY $REF grads --model ref_model.safetensors --tokens ref_tokens.npy --bert-mask ref_mask.npy \
    --out ref_grads_bert.safetensors --float64
