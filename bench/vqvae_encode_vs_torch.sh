#!/bin/sh
# vqvae_encode_vs_torch.sh - the vqvae-encode stage over the CIFAR-10 JPEG copy (60,000 32x32 images) on
# prism, against the same encode in the PyTorch reference (bench/vqvae_reference.py encode: the same
# trained weights, the same images decoded by PIL beforehand, encoder + nearest code in batches).
# The Go figure is the whole stage: Beam on prism, reading the download stage's Image shards, resizing
# (none here), encoding, shuffling and writing Tokens shards; the torch figure is the encode alone.
# Usage: bench/vqvae_encode_vs_torch.sh CONFIG ROOT
#   CONFIG: a config whose vqvae-train is done under ROOT (configs/cifar10-vqvae-f2.yaml); the stage is
#   rerun with --force. THREADS=2, BATCH=32 by default.
set -eu
cd "$(dirname "$0")/.."
CONFIG=$1 ROOT=$2
THREADS=${THREADS:-2}
BATCH=${BATCH:-32}
PY=/usr/bin/python3
BIN=/tmp/igpt_encode_bench
go build -o "$BIN" ./cmd/igpt
. bench/cpu.sh
echo "# $(cpu_line); go $(go env GOVERSION); torch $($PY -c 'import torch; print(torch.__version__)'); threads $THREADS; $(date -u +%Y-%m-%dT%H:%MZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN" stage vqvae-encode "$CONFIG" --root "$ROOT" --force --log_level=warn
MANIFEST=$(ls -d "$ROOT"/vqvae-encode/*/_MANIFEST.json | head -1)
MODEL=$($PY - "$ROOT" "$CONFIG" <<'PYEOF'
import glob, json, sys
ms = [json.load(open(p)) | {'dir': p.rsplit('/', 1)[0]} for p in glob.glob(sys.argv[1] + '/vqvae-train/*/_MANIFEST.json')]
m = max(ms, key=lambda m: m['finished'])
print(m['dir'] + '/' + m['meta']['checkpoint'])
PYEOF
)
ARCHIVE=$($PY -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['dataset']['source'])" "$CONFIG" 2>/dev/null || grep -m1 'source:' "$CONFIG" | sed 's/.*source: *//')
$PY bench/vqvae_reference.py encode --model "$MODEL" --archive "$ARCHIVE" --batch "$BATCH" --threads "$THREADS" | tee /tmp/igpt_encode_torch.json
$PY - "$MANIFEST" /tmp/igpt_encode_torch.json <<'PYEOF'
import json, sys
from datetime import datetime
m = json.load(open(sys.argv[1]))
t = json.load(open(sys.argv[2]))
iso = lambda s: datetime.fromisoformat(s[:26].rstrip('Z'))
secs = (iso(m['finished']) - iso(m['started'])).total_seconds()
n = m['meta']['records']
n = sum(sum(v.values()) if isinstance(v, dict) else v for v in n.values()) if isinstance(n, dict) else n
print(f"go stage   {n} images in {secs:.1f} s = {n / secs:.1f} img/s (prism, whole stage)")
print(f"torch      {t['images']} images in {t['s']:.1f} s = {t['images_per_s']:.1f} img/s (encode only)")
print(f"go/torch   {(n / secs) / t['images_per_s']:.2f}x")
PYEOF
