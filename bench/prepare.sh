#!/usr/bin/env bash
# Wall time of the whole prepare (download → palette → quantize, k = 512) of
# the CIFAR-10 JPEG copy in ../shared/data on one runner (default prism),
# with each stage's time and throughput read from its manifest. It stops at
# quantize (--until quantize): nothing is trained or probed.
# Usage: bench/prepare.sh [RUNNER]
set -euo pipefail
cd "$(dirname "$0")/.."
runner=${1:-prism}
src=${IGPT_SHARED_DATA:-../shared/data}/cifar10-jpeg/CIFAR-10-images-jpeg.tar.gz
[ -f "$src" ] || { echo "missing $src (set IGPT_SHARED_DATA)"; exit 1; }
bin=$(mktemp -d)/igpt
go build -o "$bin" ./cmd/igpt
root=$(mktemp -d)
cat > "$root/bench.yaml" <<YAML
root: $root/data
dataset: {name: folder, source: $src, image_size: [32, 32]}
download: {shard_mib: 16}
palette: {k: 512, seed: 0}
YAML
echo "cpus: $(nproc)  runner: $runner  source: $src"
t0=$(date +%s.%N)
"$bin" run "$root/bench.yaml" --until quantize --runner="$runner" --log_level=warn >/dev/null
t1=$(date +%s.%N)
for st in download palette quantize; do
  m=$(ls "$root"/data/$st/*/_MANIFEST.json)
  python3 - "$m" "$st" <<'PY'
import json, re, sys
from datetime import datetime
m = json.load(open(sys.argv[1])); st = sys.argv[2]
import re
def t(s): return datetime.fromisoformat(re.sub(r'\.(\d{1,6})\d*', r'.\1', s).replace('Z', '+00:00'))
wall = (t(m['finished']) - t(m['started'])).total_seconds()
recs = sum(f['records'] for f in m['files'] if f.get('split'))
line = f"{st:9s} wall_s={wall:.2f}"
if recs: line += f" records={recs} records/s={recs/wall:.0f}"
meta = m.get('meta', {})
if st == 'palette':
    line += f" pixels={meta['pixels']} distinct={meta['distinct_colours']} histogram_s={meta['histogram_s']:.2f} kmeans_s={meta['kmeans_s']:.2f} iterations={meta['iterations']} mse_per_pixel={meta['mse_per_pixel']:.3f}"
print(line)
PY
done
printf 'prepare total wall_s=%.2f\n' "$(echo "$t1 - $t0" | bc -l)"
rm -rf "$root"
