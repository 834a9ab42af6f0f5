#!/bin/sh
# trainstep_vs_torch.sh - a full iGPT training step (forward + loss + backward + Adam β=(0.9, 0.95)) and a
# forward pass, fp32 on the CPU: eager PyTorch (../shared/bench/torch_train_step.py, Debian's torch with
# OpenMP OpenBLAS) against igpt's pure-Go model package (bench/trainstep, CGO_ENABLED=0), side by side on
# the same machine, same threads, same configs, same FLOP count (dense attention, torch's count), AR.
#
#   (a) L4 d256 H8 T256,  train B8, fwd B32
#   (b) L4 d256 H8 T1024, train B8, fwd B8
#   (c) L8 d512 H8 T256,  train B8, fwd B32
#
# Usage: bench/trainstep_vs_torch.sh            (from anywhere; THREADS=2 by default)
#   CONFIGS="a b c"  which configs;  REPEAT=n  runs torch and Go alternately n times per config and keeps
#   each side's best median (filters out runs that other jobs on a shared machine slowed down);
#   SGEMM=0 skips the OpenBLAS SGEMM measurement (used for the "fraction of SGEMM" figure);
#   OBJECTIVE=bert for the BERT objective;  BF16=0 skips, BF16=1 forces the bf16 column (default: on when
#   /proc/cpuinfo has avx512_bf16): igpt's training step again with -precision bf16 (the blocks' linear
#   layers on VDPBF16PS with fp32 accumulation, model.BF16), run in the same rounds as torch and fp32 Go.
# Prints torch's and Go's "tokens/s" / "GFLOP/s" lines and the ratios Go/torch (and bf16/fp32, by wall clock and,
# as the load of a shared machine inflates it least, by the process's CPU time per step), plus Go's model GFLOP/s as a
# fraction of the CPU's peak (estimated: clock × FLOPs/cycle × threads, see bench/trainstep) and of
# OpenBLAS SGEMM (mean over the transformer shapes of that width in ../shared/bench/sgemm_openblas.c,
# the better of OpenBLAS's automatic and forced AVX-512 kernels, measured here first).
set -eu
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
CONFIGS=${CONFIGS:-"a b c"}
REPEAT=${REPEAT:-1}
OBJECTIVE=${OBJECTIVE:-ar}
if [ -z "${BF16:-}" ]; then
    BF16=0
    grep -q -w avx512_bf16 /proc/cpuinfo && BF16=1
fi
PY=/usr/bin/python3
TORCH=../shared/bench/torch_train_step.py
SRC=../shared/bench/sgemm_openblas.c
OB=/tmp/sgemm_openblas
GO_BIN=/tmp/igpt_trainstep
if ! $PY -c 'import torch' 2>/dev/null; then
    apt-get install -y python3-torch python3-numpy libopenblas0-openmp >/dev/null
fi
CGO_ENABLED=0 go build -o "$GO_BIN" ./bench/trainstep
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }
. bench/cpu.sh # CPU_NAME, FAM, FPC (FLOPs per cycle per core for the peak estimate), cpu_line
echo "# $(cpu_line); go $(go env GOVERSION); threads $THREADS; repeat $REPEAT; $(date -u +%Y-%m-%dT%H:%MZ); load $(load)"

SG256=0; SG512=0
if [ "${SGEMM:-1}" = 1 ]; then
    if ! [ -x "$OB" ] || [ "$SRC" -nt "$OB" ]; then
        if ! [ -e /usr/include/x86_64-linux-gnu/cblas.h ] && ! [ -e /usr/include/cblas.h ]; then
            apt-get install -y libopenblas-dev >/dev/null
        fi
        gcc -O2 -march=native -Wall -o "$OB" "$SRC" -lopenblas -lm
    fi
    "$OB" "$THREADS" 5 >"$TMP/ob" 2>&1
    : >"$TMP/ob512"
    grep -q -w avx512f /proc/cpuinfo && OPENBLAS_CORETYPE=Cooperlake "$OB" "$THREADS" 5 >"$TMP/ob512" 2>&1
    grep '^# OpenBLAS' "$TMP/ob" | head -1
    sg() {
        awk -v d="$1" '/^#/ { next } index($1, "d" d ".") == 1 { if ($6 > b[$1]) b[$1] = $6 }
            END { for (k in b) { s += b[k]; n++ } printf "%.1f", n ? s / n : 0 }' "$TMP/ob" "$TMP/ob512"
    }
    SG256=$(sg 256); SG512=$(sg 512)
    echo "# OpenBLAS SGEMM, $THREADS threads, mean of the transformer shapes (best of auto/AVX-512 kernels): d256 $SG256 GFLOP/s, d512 $SG512 GFLOP/s"
fi

best() { # best value of "KEY: X" over the runs in file $1
    grep "^$2:" "$1" | awk '{ if ($NF + 0 > b) b = $NF + 0 } END { print b + 0 }'
}
leastcpu() { # least median CPU ms per training step over the runs in file $1
    grep "^train cpu ms/step:" "$1" | awk '{ v = $4 + 0; if (b == 0 || v < b) b = v } END { print b + 0 }'
}
for c in $CONFIGS; do
    case $c in
    a) args="--layers 4 --d 256 --heads 8 --seq 256 --batch 8 --fwd-batch 32 --steps 10 --warmup 3"; sg=$SG256 ;;
    b) args="--layers 4 --d 256 --heads 8 --seq 1024 --batch 8 --fwd-batch 8 --steps 5 --warmup 2"; sg=$SG256 ;;
    c) args="--layers 8 --d 512 --heads 8 --seq 256 --batch 8 --fwd-batch 32 --steps 5 --warmup 2"; sg=$SG512 ;;
    *) echo "unknown config $c" >&2; exit 2 ;;
    esac
    : >"$TMP/torch"; : >"$TMP/go"; : >"$TMP/go16"
    r=0
    while [ "$r" -lt "$REPEAT" ]; do
        l0=$(load)
        $PY "$TORCH" --threads "$THREADS" --vocab 512 --objective "$OBJECTIVE" $args >>"$TMP/torch" 2>&1
        l1=$(load)
        # shellcheck disable=SC2086
        "$GO_BIN" -threads "$THREADS" -vocab 512 -objective "$OBJECTIVE" -flops-per-cycle $FPC -sgemm-gflops "$sg" \
            $(echo "$args" | sed 's/--/-/g') -breakdown >>"$TMP/go" 2>&1
        l2=$(load)
        if [ "$BF16" = 1 ]; then
            # shellcheck disable=SC2086
            "$GO_BIN" -threads "$THREADS" -vocab 512 -objective "$OBJECTIVE" -flops-per-cycle $FPC -sgemm-gflops "$sg" \
                $(echo "$args" | sed 's/--/-/g') -fwd-batch 0 -precision bf16 -breakdown >>"$TMP/go16" 2>&1
        fi
        echo "# ($c) run $((r + 1)): load before torch $l0, before Go $l1, before Go bf16 $l2, after $(load)"
        r=$((r + 1))
    done
    echo "== ($c) $(grep -m1 '^config:' "$TMP/torch" | sed 's/^config: //')"
    grep -m1 '^# torch' "$TMP/torch"
    grep -E '^(train|fwd) (ms/|tokens|GFLOP)' "$TMP/torch" | sed 's/^/torch /'
    grep -m1 '^# igpt' "$TMP/go"
    grep -E '^(train|fwd) (ms/|cpu|tokens|GFLOP|fraction|breakdown)' "$TMP/go" | sed 's/^/go    /'
    if [ "$BF16" = 1 ]; then
        grep -m1 '^# igpt' "$TMP/go16"
        grep -E '^train (ms/|cpu|tokens|GFLOP|fraction|breakdown|last_loss)' "$TMP/go16" | sed 's/^/go16  /'
    fi
    for k in train fwd; do
        tt=$(best "$TMP/torch" "$k tokens/s"); gt=$(best "$TMP/go" "$k tokens/s")
        echo "$k $tt $gt" | awk '{ r = ($2 > 0) ? $3 / $2 : 0; printf "(%s) %-5s tokens/s: torch %s, go %s, go/torch %.2fx\n", c, $1, $2, $3, r }' c="$c"
    done
    if [ "$BF16" = 1 ]; then
        tt=$(best "$TMP/torch" "train tokens/s"); gt=$(best "$TMP/go" "train tokens/s"); bt=$(best "$TMP/go16" "train tokens/s")
        echo "$tt $gt $bt" | awk '{ r = ($1 > 0) ? $3 / $1 : 0; s = ($2 > 0) ? $3 / $2 : 0
            printf "(%s) train tokens/s bf16: go bf16 %s, go bf16/torch %.2fx, go bf16/go fp32 %.2fx\n", c, $3, r, s }' c="$c"
        # CPU time per step: what a shared machine's load inflates least
        gc=$(leastcpu "$TMP/go"); bc=$(leastcpu "$TMP/go16")
        echo "$gc $bc" | awk '{ s = ($2 > 0) ? $1 / $2 : 0
            printf "(%s) train cpu ms/step (least median over runs): go fp32 %s, go bf16 %s, bf16 speed-up by CPU time %.2fx\n", c, $1, $2, s }' c="$c"
    fi
    echo
done
