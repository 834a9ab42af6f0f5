#!/bin/sh
# forward_vs_ort.sh - the iGPT forward pass (logits of an AR batch) in ONNX Runtime 1.30 (CPU, MLAS kernels:
# the strongest CPU inference engine here) against igpt's pure-Go model package (bench/trainstep -batch 0,
# CGO_ENABLED=0), side by side on the same machine and threads, on the three shapes of
# ../shared/bench/README.md:
#
#   (s) L4 d256 H8 T256,  B32
#   (m) L3 d384 H6 T256,  B64
#   (l) L4 d128 H4 T1024, B16
#
# Usage: bench/forward_vs_ort.sh      (from anywhere; THREADS=2, REPEAT=3, SHAPES="s m l" by default)
#   REPEAT=n runs ORT and Go alternately n times per shape and keeps each side's best median (a shared
#   machine's other jobs only ever slow a run down). ORT_DIR: where onnxruntime-node is installed
#   (default ~/.cache/igpt/ort; installed there from the npm registry on first use, without its install
#   script, which fetches GPU files from elsewhere).
# Prints the CPU (model name and family), each side's "fwd tokens/s" per run and, per shape, the best of
# each and the ratio go/ort.
set -eu
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
REPEAT=${REPEAT:-3}
SHAPES=${SHAPES:-"s m l"}
ORT_DIR=${ORT_DIR:-$HOME/.cache/igpt/ort}
PY=/usr/bin/python3
SHARED=../shared/bench
GO_BIN=$(mktemp -d)/igpt_trainstep
TMP=$(mktemp -d)
trap 'rm -rf "$TMP" "$(dirname "$GO_BIN")"' EXIT

if ! [ -d "$ORT_DIR/node_modules/onnxruntime-node" ]; then
    mkdir -p "$ORT_DIR"
    (cd "$ORT_DIR" && npm init -y >/dev/null && npm install --ignore-scripts onnxruntime-node@1.30.0 >/dev/null)
fi
if ! $PY -c 'import torch' 2>/dev/null; then
    apt-get install -y python3-torch python3-numpy >/dev/null
fi
CGO_ENABLED=0 go build -o "$GO_BIN" ./bench/trainstep
load() { cut -d' ' -f1-3 /proc/loadavg; }
. bench/cpu.sh
echo "# $(cpu_line); go $(go env GOVERSION); threads $THREADS; repeat $REPEAT; $(date -u +%Y-%m-%dT%H:%MZ); load $(load)"
best() { grep "$2" "$1" | awk '{ if ($NF + 0 > b) b = $NF + 0 } END { print b + 0 }'; }
for s in $SHAPES; do
    case $s in
    s) L=4 D=256 H=8 T=256 B=32 ;;
    m) L=3 D=384 H=6 T=256 B=64 ;;
    l) L=4 D=128 H=4 T=1024 B=16 ;;
    *) echo "unknown shape $s" >&2; exit 2 ;;
    esac
    M="$TMP/$s.onnx"
    $PY "$SHARED/onnx_export.py" --layers $L --d $D --heads $H --seq $T --vocab 512 --batch $B --out "$M" >/dev/null 2>&1
    : >"$TMP/ort"; : >"$TMP/go"
    r=0
    while [ "$r" -lt "$REPEAT" ]; do
        l0=$(load)
        NODE_PATH="$ORT_DIR/node_modules" node "$SHARED/ort_forward.js" "$M" $B $T 512 "$THREADS" 10 >>"$TMP/ort"
        l1=$(load)
        "$GO_BIN" -threads "$THREADS" -layers $L -d $D -heads $H -seq $T -vocab 512 -batch 0 -fwd-batch $B \
            -flops-per-cycle $FPC -steps-fwd 10 -warmup 2 >>"$TMP/go"
        echo "# ($s) run $((r + 1)): ort $(grep 'ort fwd tokens/s' "$TMP/ort" | tail -1 | awk '{print $NF}') (load $l0), go $(grep '^fwd tokens/s' "$TMP/go" | tail -1 | awk '{print $NF}') (load $l1)"
        r=$((r + 1))
    done
    ot=$(best "$TMP/ort" 'ort fwd tokens/s'); gt=$(best "$TMP/go" '^fwd tokens/s')
    echo "$ot $gt" | awk '{ r = ($1 > 0) ? $2 / $1 : 0
        printf "(%s) L%s d%s H%s T%s B%s fwd tokens/s (best of runs): ort %s, go %s, go/ort %.2fx\n", s, L, D, H, T, B, $1, $2, r }' \
        s="$s" L=$L D=$D H=$H T=$T B=$B
    grep -m1 '^fwd fraction' "$TMP/go" | sed "s/^/($s) go /"
done
