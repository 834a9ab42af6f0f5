#!/usr/bin/env bash
# Records/s of the download stage (source → decoded Image shards) for the
# CIFAR-10 JPEG tree in ../shared/data, on the prism and direct runners.
# Usage: bench/download.sh [RUNS]   (default 3 runs per runner; prints the median)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
src=${IGPT_SHARED_DATA:-../shared/data}/cifar10-jpeg/CIFAR-10-images-jpeg.tar.gz
[ -f "$src" ] || { echo "missing $src (set IGPT_SHARED_DATA)"; exit 1; }
bin=$(mktemp -d)/igpt
go build -o "$bin" ./cmd/igpt
root=$(mktemp -d)
cfg=$root/bench.yaml
cat > "$cfg" <<YAML
root: $root/data
dataset: {name: folder, source: $src, image_size: [32, 32]}
download: {shards: {train: 8, test: 2}}
YAML
echo "cpus: $(nproc)  go: $(go version | cut -d' ' -f3)  source: $src"
for runner in prism direct; do
  times=()
  for i in $(seq "$runs"); do
    t0=$(date +%s.%N)
    "$bin" stage download "$cfg" --force --runner="$runner" --log_level=warn >/dev/null
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc -l)")
  done
  med=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  recs=$("$bin" status "$cfg" | awk '$1=="download" {split($4,a,"="); split($5,b,"="); print a[2]+b[2]}')
  printf 'download %-6s records=%d wall_s(median of %d)=%.2f records/s=%.0f  runs: %s\n' \
    "$runner" "$recs" "$runs" "$med" "$(echo "$recs / $med" | bc -l)" "${times[*]}"
done
rm -rf "$root"
