#!/usr/bin/env bash
# Peak memory of every stage against dataset size, on prism in one process
# and with the Beam workers as separate processes (--worker_processes, as on
# Dataflow), on generated WebDataset sources of 64×64 JPEGs.
# Each stage runs in its own process (igpt stage NAME), so each line is that
# stage's peak alone: the launcher's and the largest worker's peak RSS (igpt's
# own "peak memory" log line, from /proc VmHWM), the wall time, and the CPU
# seconds (user + sys of the stage's process and the workers it waited for),
# and with worker processes the largest heap any worker still held after a
# garbage collection (its gctrace, IGPT_WORKER_GODEBUG=gctrace=1).
# Every stage must succeed; the script stops at the first that fails.
#
#   bench/memory.sh [SIZES...]        (default: 50000 100000 200000)
#
# Peaks move by several percent between two passes of one size (they depend
# on when Go's collector runs), so PASSES=N (default 1) runs every size N
# times, and the script ends with bench/memsummary's table: the median peak
# of each size over the passes and the ratio of the largest size's median
# to the smallest's, which is what the rule is read on (docs/memory.md).
#
# Environment: WORK (default /tmp/igpt-membench), STAGES (default: every stage
# below), MODES (default: "in-process worker-processes"), SHARD_MIB (128), PASSES (1),
# KEEP_ROOTS=1 keeps each run's output folder, LOGS=DIR keeps each stage's
# whole log (with the workers' collector trace: their heap after each
# collection).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(50000 100000 200000)
work=${WORK:-/tmp/igpt-membench}
mkdir -p "$work"
go build -o "$work/igpt" ./cmd/igpt
. bench/cpu.sh
echo "# $(cpu_line), $(date -u +%F)"
echo "# download.shard_mib: ${SHARD_MIB:-128}"
printf '%-15s %8s %-17s %13s %11s %8s %8s %16s\n' stage images mode launcher_MiB worker_MiB wall_s cpu_s worker_live_MiB
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
for pass in $(seq 1 "${PASSES:-1}"); do
[ "${PASSES:-1}" = 1 ] || echo "# pass $pass"
for n in "${sizes[@]}"; do
  src=$work/src$n
  [ -d "$src" ] || go run ./bench/gensource -out "$src" -n "$n" -side 64 -classes 100 -per_shard 10000
  for mode in ${MODES:-in-process worker-processes}; do
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
probe: {batch: 64, max_train: 4000, max_eval: 2000, raw_pixels: input, l2: [0.01]}
vqvae: {hidden: 16, res_hidden: 8, res_blocks: 1, codes: 64, code_dim: 8, factor: 4, batch: 8, steps: 5, eval_every: 5, eval_images: 16, checkpoint_every: 5, max_images: 20000}
vqvae_encode: {batch: 32}
YAML
    for stage in ${STAGES:-download palette quantize train probe-baselines probe vqvae-train vqvae-encode}; do
      start=$(date +%s.%N)
      log=$(IGPT_WORKER_GODEBUG=gctrace=1 /usr/bin/time -f 'cpu_seconds %U %S' "$work/igpt" stage "$stage" "$work/cfg-$n.yaml" --root "$root" "${flags[@]}" 2>&1) ||
        { echo "$log" | tail -20; echo "bench/memory.sh: stage $stage failed at $n images ($mode)" >&2; exit 1; }
      end=$(date +%s.%N)
      [ -z "${LOGS:-}" ] || { mkdir -p "$LOGS"; echo "$log" > "$LOGS/$stage-$n-$mode.log"; }
      mem=$(echo "$log" | grep 'msg="peak memory"' | tail -1)
      l=$(echo "$mem" | sed -n 's/.*launcher_rss_mib=\([0-9]*\).*/\1/p')
      w=$(echo "$mem" | sed -n 's/.*largest_worker_rss_mib=\([0-9]*\).*/\1/p')
      cpu=$(echo "$log" | awk '/^cpu_seconds/ {print $2 + $3}' | tail -1)
      # The workers' collector trace (gc N … A->B->C MB …): C is the heap
      # still live after a collection; its largest, in any worker, is what
      # the data can grow. (Peaks also move with when the collector runs.)
      live=$(echo "$log" | sed -n 's/^gc [0-9]* @.* [0-9]*->[0-9]*->\([0-9]*\) MB, .*/\1/p' | sort -n | tail -1)
      printf '%-15s %8s %-17s %13s %11s %8.1f %8.1f %16s\n' "$stage" "$n" "$mode" "$l" "$w" "$(echo "$end - $start" | bc)" "$cpu" "${live:--}" | tee -a "$rows"
      if [ "$stage" = palette ]; then
        echo "$log" | grep -o 'msg="palette: histogram done".*' | sed 's/^/#   /' | head -1 || true # a worker logs it with --worker_processes
      fi
    done
    [ "${KEEP_ROOTS:-}" = 1 ] || rm -rf "$root"
  done
done
done # pass
go run ./bench/memsummary "$rows"
