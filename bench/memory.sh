#!/usr/bin/env bash
# Peak memory of the download and probe stages against dataset size, on prism
# in one process and with the workers as separate processes
# (--worker_processes), on generated WebDataset sources of 64×64 JPEGs.
# Each stage runs in its own process (igpt stage NAME), so each line is that
# stage's peak alone. Prints one line per run: stage, images, mode, launcher and largest-worker
# peak RSS (igpt's own "peak memory" log line, from getrusage) and wall time.
#
#   bench/memory.sh [SIZES...]        (default: 100000 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(100000 200000)
work=${WORK:-/tmp/igpt-membench}
mkdir -p "$work"
go build -o "$work/igpt" ./cmd/igpt
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%F)"
echo "# download.shard_mib: ${SHARD_MIB:-128}"
printf '%-9s %8s %-17s %13s %13s %8s\n' stage images mode launcher_MiB worker_MiB wall_s
for n in "${sizes[@]}"; do
  src=$work/src$n
  [ -d "$src" ] || go run ./bench/gensource -out "$src" -n "$n" -side 64 -classes 100 -per_shard 10000
  for mode in in-process worker-processes; do
    flags=(); [ "$mode" = worker-processes ] && flags=(--worker_processes)
    root=$work/root-$n-$mode
    rm -rf "$root"
    cat > "$work/cfg-$n.yaml" <<YAML
dataset:
  name: webdataset
  splits: {train: $src/train/*.tar, test: $src/test/*.tar}
download: {shard_mib: ${SHARD_MIB:-128}}
palette: {k: 64}
quantize: {resize: [16, 16], val_fraction: 0.05}
train: {model: nano, steps: 5, batch: 8, eval_every: 5, eval_records: 64, checkpoint_every: 5}
probe: {batch: 64, max_per_shard: 2000, max_train: 4000, baselines: false, l2: [0.01]}
YAML
    for stage in ${STAGES:-download palette quantize train probe-baselines probe}; do
      start=$(date +%s.%N)
      log=$("$work/igpt" stage $stage "$work/cfg-$n.yaml" --root "$root" "${flags[@]}" 2>&1) || { echo "$log" | tail -20; exit 1; }
      end=$(date +%s.%N)
      mem=$(echo "$log" | grep 'msg="peak memory"' | tail -1)
      l=$(echo "$mem" | sed -n 's/.*launcher_rss_mib=\([0-9]*\).*/\1/p')
      w=$(echo "$mem" | sed -n 's/.*largest_worker_rss_mib=\([0-9]*\).*/\1/p')
      printf '%-9s %8s %-17s %13s %13s %8.1f\n' $stage "$n" "$mode" "$l" "$w" "$(echo "$end - $start" | bc)"
    done
  done
done
