# cpu.sh - sourced by the bench scripts: the CPU facts every figure is quoted with, and the FLOPs per
# cycle per core that their peak estimates use.
#   CPU_NAME  model name (/proc/cpuinfo)      FAM  CPU family
#   FPC       fp32 FLOPs per cycle per core: AVX-512 on AMD family 25 (Zen 4) is double-pumped 256-bit
#             (32); family 26 (Zen 5) and Intel AVX-512 have two 512-bit FMA pipes (64); AVX2 32.
#   cpu_line  "MODEL (family F), N CPUs"
CPU_NAME=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
FAM=$(grep -m1 'cpu family' /proc/cpuinfo | sed 's/.*: //')
FPC=32
if grep -q -w avx512f /proc/cpuinfo; then
    if ! grep -q AuthenticAMD /proc/cpuinfo || [ "$FAM" -ge 26 ]; then FPC=64; fi
fi
cpu_line() { echo "$CPU_NAME (family $FAM), $(nproc) CPUs"; }
