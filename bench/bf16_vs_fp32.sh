#!/bin/sh
# bf16_vs_fp32.sh - the wall-clock speed-up of train.precision bf16 over fp32 for one training step of igpt's
# model (bench/trainstep, CGO_ENABLED=0), the two precisions run alternately from one binary, ROUNDS times
# per config, so that a shared machine's load falls on both alike. Needs AVX512_BF16 (else bench/trainstep
# refuses -precision bf16).
#
#   (a) L4 d256 H8 T256 B8    (b) L4 d256 H8 T1024 B8    (c) L8 d512 H8 T256 B8   (as bench/trainstep_vs_torch.sh)
#   (r) L4 d256 H8 T256 B32: the iGPT stage of configs/cifar10-2h.yaml (its step, without evaluations)
#
# Usage: bench/bf16_vs_fp32.sh            (CONFIGS="a c", ROUNDS=4, THREADS=2 by default)
# Prints the CPU, then per round the two medians (train ms/step) and their ratio, and per config the median
# of the rounds' ratios and the ratio of each side's best median.
set -eu
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
CONFIGS=${CONFIGS:-"a c"}
ROUNDS=${ROUNDS:-4}
BIN=$(mktemp -d)/igpt_trainstep
trap 'rm -rf "$(dirname "$BIN")"' EXIT
CGO_ENABLED=0 go build -o "$BIN" ./bench/trainstep
. bench/cpu.sh
echo "# $(cpu_line); avx512_bf16: $(grep -q -w avx512_bf16 /proc/cpuinfo && echo yes || echo no); threads $THREADS; rounds $ROUNDS; $(date -u +%Y-%m-%dT%H:%MZ)"
for c in $CONFIGS; do
    case $c in
    a) args="-layers 4 -d 256 -heads 8 -seq 256 -batch 8 -steps 10 -warmup 3" ;;
    b) args="-layers 4 -d 256 -heads 8 -seq 1024 -batch 8 -steps 4 -warmup 1" ;;
    c) args="-layers 8 -d 512 -heads 8 -seq 256 -batch 8 -steps 5 -warmup 2" ;;
    r) args="-layers 4 -d 256 -heads 8 -seq 256 -batch 32 -steps 6 -warmup 2" ;;
    *) echo "unknown config $c" >&2; exit 2 ;;
    esac
    r=1
    out=""
    while [ "$r" -le "$ROUNDS" ]; do
        # shellcheck disable=SC2086
        f=$("$BIN" -threads "$THREADS" -vocab 512 -fwd-batch 0 $args -precision fp32 | awk '/^train ms\/step/ { print $3 }')
        # shellcheck disable=SC2086
        b=$("$BIN" -threads "$THREADS" -vocab 512 -fwd-batch 0 $args -precision bf16 | awk '/^train ms\/step/ { print $3 }')
        line="$f $b"
        echo "($c) round $r: fp32 $f ms, bf16 $b ms, ratio $(echo "$line" | awk '{ printf "%.2f", $1 / $2 }'), load $(cut -d' ' -f1 /proc/loadavg)"
        out="$out$line
"
        r=$((r + 1))
    done
    printf '%s' "$out" | awk -v c="$c" '{ q[NR] = $1 / $2; if (NR == 1 || $1 < f) f = $1; if (NR == 1 || $2 < b) b = $2 }
        END { n = NR
              for (i = 2; i <= n; i++) { v = q[i]; for (j = i - 1; j >= 1 && q[j] > v; j--) q[j + 1] = q[j]; q[j + 1] = v }
              m = (n % 2) ? q[(n + 1) / 2] : (q[n / 2] + q[n / 2 + 1]) / 2
              printf "(%s) bf16 speed-up: median of rounds %.2fx, best fp32 %s ms / best bf16 %s ms = %.2fx\n", c, m, f, b, f / b }'
done
