#!/usr/bin/env bash
# kmeans_vs_sklearn.sh - palette k-means side by side: ours (bench/kmeans: exact colour histogram,
# weighted k-means++ and weighted Lloyd) against scikit-learn's KMeans (k-means++, n_init=1, lloyd)
# over every pixel (../shared/bench/kmeans_sklearn.py). Both report mse_per_pixel the same way:
# sum over all pixels of min_c |rgb - c|^2 / pixels, in float64 with an exact nearest-centre search.
#
# Usage (from anywhere; paths are relative to the repository root):
#   bench/kmeans_vs_sklearn.sh
# Environment:
#   DATA=../shared/data/cifar10-exact-subset/data_batch_1_first4000.bin   CIFAR binary file
#   K=512 SEED=0 THREADS=2 (GOMAXPROCS for ours, --threads for sklearn)
#   GO_ARGS="-tol 1e-4"            extra flags for bench/kmeans
#   SKLEARN_ARGS="--unique"         extra flags for kmeans_sklearn.py (--unique, --sample N, --max-iter, --tol ...)
#   SKLEARN_OUT=/tmp/sk.txt         reuse this saved sklearn output if it exists (the full-pixel fit takes
#                                   ~5 minutes on 2 cores), else run sklearn and save its output there
# Exit status 0 when our mse_per_pixel <= sklearn's, 1 when it is worse.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-exact-subset/data_batch_1_first4000.bin}
K=${K:-512}
SEED=${SEED:-0}
THREADS=${THREADS:-2}
GO_ARGS=${GO_ARGS:-}
SKLEARN_ARGS=${SKLEARN_ARGS:-}
PY=/usr/bin/python3
SKLEARN=../shared/bench/kmeans_sklearn.py

[ -f "$DATA" ] || { echo "kmeans_vs_sklearn: $DATA not found" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== ours: bench/kmeans (GOMAXPROCS=$THREADS) =="
go build -o "$tmp/kmeans" ./bench/kmeans
# shellcheck disable=SC2086
GOMAXPROCS=$THREADS "$tmp/kmeans" -cifar "$DATA" -k "$K" -seed "$SEED" $GO_ARGS | tee "$tmp/go.txt"

echo "== scikit-learn: $SKLEARN --threads $THREADS $SKLEARN_ARGS =="
if [ -n "${SKLEARN_OUT:-}" ] && [ -s "$SKLEARN_OUT" ]; then
    echo "(reusing $SKLEARN_OUT)"
    cp "$SKLEARN_OUT" "$tmp/sk.txt"
    cat "$tmp/sk.txt"
else
    if ! $PY -c 'import sklearn, numpy, threadpoolctl' 2>/dev/null; then
        apt-get update && apt-get install -y python3-sklearn python3-numpy python3-threadpoolctl
    fi
    # shellcheck disable=SC2086
    $PY "$SKLEARN" --threads "$THREADS" --cifar "$DATA" --k "$K" --seed "$SEED" $SKLEARN_ARGS | tee "$tmp/sk.txt"
    if [ -n "${SKLEARN_OUT:-}" ]; then cp "$tmp/sk.txt" "$SKLEARN_OUT"; fi
fi

get() { sed -n "s/^$2: *//p" "$1" | head -1; }
go_mse=$(get "$tmp/go.txt" 'kmeans mse_per_pixel')
sk_mse=$(get "$tmp/sk.txt" 'kmeans mse_per_pixel')
echo "== summary (k=$K seed=$SEED threads=$THREADS, $(get "$tmp/go.txt" data)) =="
printf '%-14s %12s %12s %12s\n' '' 'wall_s' 'iterations' 'mse_per_pixel'
printf '%-14s %12s %12s %12s\n' ours "$(get "$tmp/go.txt" 'kmeans wall_s')" "$(get "$tmp/go.txt" 'kmeans iterations')" "$go_mse"
printf '%-14s %12s %12s %12s\n' scikit-learn "$(get "$tmp/sk.txt" 'kmeans wall_s')" "$(get "$tmp/sk.txt" 'kmeans iterations')" "$sk_mse"
echo "ours: histogram build_s $(get "$tmp/go.txt" 'histogram build_s') (not in wall_s), lut build_s $(get "$tmp/go.txt" 'lut build_s')"
if awk -v a="$go_mse" -v b="$sk_mse" 'BEGIN { exit !(a <= b) }'; then
    echo "mse: ours <= scikit-learn: OK"
else
    echo "mse: ours > scikit-learn: WORSE"
    exit 1
fi
