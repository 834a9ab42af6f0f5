#!/usr/bin/python3
"""torch_attention.py - eager PyTorch softmax attention, forward + backward, fp32 CPU.

The attention of ../shared/bench/igpt_reference.py (as timed inside torch_train_step.py), without the
projections: from the fused qkv [B, T, 3C] (a leaf with requires_grad) split into H heads of hd,
s = q k^T / sqrt(hd), masked_fill of the causal mask (AR; --no-causal for BERT), softmax, @ v, back to
[B, T, C]; then backward of (out * dout).sum(). Same BLAS set-up as torch_train_step.py: re-runs itself
with Debian's OpenMP OpenBLAS on LD_LIBRARY_PATH, OMP/OPENBLAS threads = --threads.

Usage: /usr/bin/python3 bench/torch_attention.py --threads 2 [--B 8 --H 4 --T 1024 --hd 64] [--iters 10]
Prints: torch attention B8 H4 T1024 hd64 causal threads 2: fwd X ms, bwd Y ms, fwd+bwd Z ms (median of N)
"""
import argparse
import math
import os
import statistics
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument('--threads', type=int, default=2)
ap.add_argument('--B', type=int, default=8)
ap.add_argument('--H', type=int, default=4)
ap.add_argument('--T', type=int, default=1024)
ap.add_argument('--hd', type=int, default=64)
ap.add_argument('--no-causal', action='store_true')
ap.add_argument('--iters', type=int, default=10)
ap.add_argument('--warmup', type=int, default=2)
a = ap.parse_args()
OPENMP_BLAS = '/usr/lib/x86_64-linux-gnu/openblas-openmp'
if not os.environ.get('LD_LIBRARY_PATH', '').startswith(OPENMP_BLAS) and \
        os.path.exists(os.path.join(OPENMP_BLAS, 'libblas.so.3')):
    lib_path = ':'.join(filter(None, [OPENMP_BLAS, os.environ.get('LD_LIBRARY_PATH')]))
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, LD_LIBRARY_PATH=lib_path))
os.environ['OMP_NUM_THREADS'] = str(a.threads)
os.environ['OPENBLAS_NUM_THREADS'] = str(a.threads)
import torch  # noqa: E402

torch.set_num_threads(a.threads)
torch.manual_seed(1)
B, H, T, hd = a.B, a.H, a.T, a.hd
C = H * hd
causal = not a.no_causal
qkv = torch.randn(B, T, 3 * C, requires_grad=True)
dout = torch.randn(B, T, C)
mask = ~torch.ones(T, T, dtype=torch.bool).tril()


def attention(x):
    q, k, v = x.split(C, dim=-1)
    q, k, v = (t.reshape(B, T, H, hd).transpose(1, 2) for t in (q, k, v))
    s = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if causal:
        s = s.masked_fill(mask, float('-inf'))
    y = s.softmax(-1) @ v
    return y.transpose(1, 2).reshape(B, T, C)


fw, bw, tot = [], [], []
for it in range(a.warmup + a.iters):
    qkv.grad = None
    t0 = time.perf_counter()
    y = attention(qkv)
    t1 = time.perf_counter()
    y.backward(dout)
    t2 = time.perf_counter()
    if it >= a.warmup:
        fw.append((t1 - t0) * 1e3)
        bw.append((t2 - t1) * 1e3)
        tot.append((t2 - t0) * 1e3)
print(f'# torch {torch.__version__}; BLAS via {os.environ.get("LD_LIBRARY_PATH", "system")}')
print(f'torch attention B{B} H{H} T{T} hd{hd} {"causal" if causal else "full"} threads {a.threads}: '
      f'fwd {statistics.median(fw):.1f} ms, bwd {statistics.median(bw):.1f} ms, '
      f'fwd+bwd {statistics.median(tot):.1f} ms (median of {a.iters}; min {min(tot):.1f})')
