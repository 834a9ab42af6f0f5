#!/bin/sh
# sgemm_vs_openblas.sh - SGEMM side by side: OpenBLAS cblas_sgemm (../shared/bench/sgemm_openblas.c)
# against igpt's pure-Go kernels.Sgemm (bench/sgemm, built with CGO_ENABLED=0), same shapes, same
# machine, run one after the other for each thread count. Prints one table per thread count with
# GFLOP/s and the ratio Go/OpenBLAS per shape.
#
# OpenBLAS 0.3.21 (Debian) does not know every CPU: on AVX-512 machines it may fall back to its AVX2
# "Haswell" kernels (e.g. on Zen 5). The script therefore also runs it with OPENBLAS_CORETYPE forced to
# its AVX-512 kernels (Cooperlake, what it picks on Zen 4) when the CPU has avx512f, and reports the
# ratio against the faster of the two OpenBLAS runs per shape (ratio_best) as well as against the
# automatic choice (ratio_auto).
#
# Usage (from the repository root or anywhere):  bench/sgemm_vs_openblas.sh [SAMPLES]
#   THREADS="1 2" (default) selects the thread counts; SAMPLES defaults to 11 as in sgemm_openblas.c.
#   REPEAT=n (default 1) runs the three programs n times in turn and keeps, per shape and program, the
#   best of the n medians: on a shared machine this filters out runs that other jobs slowed down,
#   equally for both sides.
set -eu
cd "$(dirname "$0")/.."
SAMPLES=${1:-11}
THREADS=${THREADS:-"1 2"}
SRC=../shared/bench/sgemm_openblas.c
OB=/tmp/sgemm_openblas
GO_BIN=/tmp/igpt_sgemm
if ! [ -e /usr/include/x86_64-linux-gnu/cblas.h ] && ! [ -e /usr/include/cblas.h ]; then
    apt-get install -y libopenblas-dev >/dev/null
fi
if ! [ -x "$OB" ] || [ "$SRC" -nt "$OB" ]; then
    gcc -O2 -march=native -Wall -o "$OB" "$SRC" -lopenblas -lm
fi
CGO_ENABLED=0 go build -o "$GO_BIN" ./bench/sgemm
AVX512=$(grep -q -w avx512f /proc/cpuinfo && echo yes || echo no)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
. bench/cpu.sh
echo "# $(cpu_line); go $(go env GOVERSION); samples $SAMPLES; repeat ${REPEAT:-1}; $(date -u +%Y-%m-%dT%H:%MZ)"
for t in $THREADS; do
    : >"$TMP/ob.$t"; : >"$TMP/ob512.$t"; : >"$TMP/go.$t"
    r=0
    while [ $r -lt "${REPEAT:-1}" ]; do
        "$OB" "$t" "$SAMPLES" >>"$TMP/ob.$t"
        if [ "$AVX512" = yes ]; then
            OPENBLAS_CORETYPE=Cooperlake "$OB" "$t" "$SAMPLES" >>"$TMP/ob512.$t"
        fi
        "$GO_BIN" -threads "$t" -samples "$SAMPLES" >>"$TMP/go.$t"
        r=$((r + 1))
    done
    [ "$AVX512" = yes ] || cp "$TMP/ob.$t" "$TMP/ob512.$t"
    grep '^# ' "$TMP/ob.$t" | head -1 | sed 's/^# /# OpenBLAS auto: /'
    [ "$AVX512" = yes ] && grep '^# ' "$TMP/ob512.$t" | head -1 | sed 's/^# /# OpenBLAS forced: /'
    grep '^# ' "$TMP/go.$t" | head -1 | sed 's/^# /# Go: /'
    awk -v t="$t" '
        FNR == 1 { f++ }
        /^#/ { next }
        f == 1 { if ($6 > auto[$1]) auto[$1] = $6; next }
        f == 2 { if ($6 > forced[$1]) forced[$1] = $6; next }
        f == 3 { if (!($1 in go)) order[++n] = $1; dims[$1] = $2 " " $3 $4; if ($6 > go[$1]) go[$1] = $6 }
        END {
            printf "%-18s %-16s %4s %7s %8s %9s %8s %10s %10s\n", "name", "MxNxK", "tatb", "threads", "Go", "OB_auto", "OB_avx512", "ratio_auto", "ratio_best"
            for (i = 1; i <= n; i++) {
                k = order[i]; split(dims[k], d, " ")
                best = auto[k] > forced[k] ? auto[k] : forced[k]
                printf "%-18s %-16s %4s %7d %8.1f %9.1f %8.1f %10.2f %10.2f\n", k, d[1], d[2], t, go[k], auto[k], forced[k], go[k] / auto[k], go[k] / best
                s += log(go[k] / best); c++
            }
            printf "geomean ratio_best (threads %d): %.3f\n\n", t, exp(s / c)
        }' "$TMP/ob.$t" "$TMP/ob512.$t" "$TMP/go.$t"
done
