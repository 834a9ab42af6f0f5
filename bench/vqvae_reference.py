#!/usr/bin/python3
"""vqvae_reference.py - PyTorch reference of igpt's VQ-VAE (package vqvae; Sonnet's vqvae_example).

Images are NHWC float32 in [-0.5, 0.5]; f = 2**L is the downsampling factor.

  encoder  L x (conv 4x4 s2 p1 + ReLU): the last to hidden, earlier ones to hidden/2
           conv 3x3 p1 hidden; R residual blocks h += conv1x1(relu(conv3x3(relu(h)))) (3x3 to res_hidden);
           ReLU; conv 1x1 to D                                                          -> z_e
  quantizer code = argmin_k |z_e - e_k|^2; z_q = e[code]; straight-through z_e + sg(z_q - z_e);
           commitment beta * mean((z_e - sg(z_q))^2)
  decoder  conv 3x3 D -> hidden; R residual blocks; ReLU; L x transposed conv 4x4 s2 p1: the last to 3
           channels (no activation), earlier ones to hidden/2 with ReLU
  loss     mean((x_hat - x)^2) / data_variance + commitment
  EMA      Sonnet's debiased EMA of counts and sums (decay), Laplace smoothing (epsilon):
           e_k = (sum_k / bc) / (((count_k / bc) + eps) / (n + K eps) * n),  bc = 1 - decay^updates

Checkpoints are the safetensors files the Go package writes (read and written by hand here, as
../shared/bench/igpt_reference.py does): every convolution "<name>.weight" [KH, KW, C, OC] (TensorFlow
layout; transposed convolutions [KH, KW, C_out, C_in]) and "<name>.bias"; "quantizer.codebook" [K, D],
"quantizer.ema_count" [K], "quantizer.ema_sum" [K, D], "quantizer.unused" [K]; the config in __metadata__
(hidden, res_hidden, res_blocks, codes, code_dim, factor, beta, decay, epsilon, dead_after, updates).
PyTorch's weight of both kinds of convolution is w.permute(3, 2, 0, 1).

Usage (from the project root):
  /usr/bin/python3 bench/vqvae_reference.py step --model M.safetensors --images X.safetensors \
      --data-var 0.07 --out OUT.safetensors [--float64]
      one training step's forward, losses, codes, parameter gradients and the EMA-updated codebook
      (no dead-code restarts: the reference checks the deterministic part) -> OUT
  /usr/bin/python3 bench/vqvae_reference.py bench [--batch 32 --size 32 --threads 2 --steps 20]
      default config (hidden 128, res_hidden 32, R 2, K 512, D 64, f 4), Adam lr 3e-4: times a training
      step (forward + backward + EMA + Adam) and encoding (encoder + nearest code); prints JSON lines
  /usr/bin/python3 bench/vqvae_reference.py encode --model M.safetensors --archive IMAGES.tar.gz \
      [--batch 32 --threads 2]
      decodes every image of a tar of PNG/JPEG files (not timed), then times encoding them all with the
      trained model in batches (encoder + nearest code, codes copied out); prints one JSON line
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ST_DTYPES = {'F32': '<f4', 'F64': '<f8', 'I64': '<i8', 'I32': '<i4'}
ST_CODES = {np.dtype(v).str: k for k, v in ST_DTYPES.items()}


def save_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    if metadata:
        header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}
    for name, a in tensors.items():
        a = np.ascontiguousarray(np.asarray(a))
        a = a.astype(a.dtype.newbyteorder('<'))
        b = a.tobytes()
        header[name] = {'dtype': ST_CODES[a.dtype.str], 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_safetensors(path):
    with open(path, 'rb') as f:
        buf = f.read()
    n = struct.unpack('<Q', buf[:8])[0]
    if 8 + n > len(buf):
        raise ValueError(f'{path}: header length {n} runs past the end of the file')
    header = json.loads(buf[8:8 + n])
    meta = header.pop('__metadata__', {}) or {}
    data = memoryview(buf)[8 + n:]
    out = {}
    for name, info in header.items():
        dt = np.dtype(ST_DTYPES[info['dtype']])
        b, e = info['data_offsets']
        shape = tuple(info['shape'])
        if e - b != math.prod(shape) * dt.itemsize:
            raise ValueError(f'{path}: {name}: data_offsets do not fit shape {shape}')
        out[name] = np.frombuffer(data[b:e], dtype=dt).reshape(shape).astype(dt.newbyteorder('='))
    return out, meta


def config_of(meta):
    c = {k: int(meta[k]) for k in ('hidden', 'res_hidden', 'res_blocks', 'codes', 'code_dim', 'factor', 'dead_after')}
    c.update({k: float(meta[k]) for k in ('beta', 'decay', 'epsilon')})
    c['updates'] = int(meta.get('updates', 0))
    return c


def conv(P, name, x, stride, pad):
    return F.conv2d(x, P[name + '.weight'].permute(3, 2, 0, 1), P[name + '.bias'], stride=stride, padding=pad)


def conv_t(P, name, x, stride, pad):
    return F.conv_transpose2d(x, P[name + '.weight'].permute(3, 2, 0, 1), P[name + '.bias'], stride=stride, padding=pad)


def residual(P, c, prefix, h):
    for r in range(c['res_blocks']):
        p = f'{prefix}.res.{r}'
        t = conv(P, p + '.conv3', F.relu(h), 1, 1)
        h = h + conv(P, p + '.conv1', F.relu(t), 1, 0)
    return F.relu(h)


def levels(c):
    return int(round(math.log2(c['factor'])))


def encoder(P, c, x):
    """x NCHW -> z_e NCHW."""
    h = x
    for i in range(levels(c)):
        h = F.relu(conv(P, f'encoder.down.{i}', h, 2, 1))
    h = conv(P, 'encoder.conv', h, 1, 1)
    h = residual(P, c, 'encoder', h)
    return conv(P, 'encoder.pre_vq', h, 1, 0)


def decoder(P, c, z):
    h = conv(P, 'decoder.conv', z, 1, 1)
    h = residual(P, c, 'decoder', h)
    L = levels(c)
    for i in range(L):
        h = conv_t(P, f'decoder.up.{i}', h, 2, 1)
        if i < L - 1:
            h = F.relu(h)
    return h


def nearest(flat, e):
    d = (flat * flat).sum(1, keepdim=True) - 2 * flat @ e.t() + (e * e).sum(1)[None, :]
    return d.argmin(1)


def forward(P, c, e, x_nhwc, data_var):
    x = x_nhwc.permute(0, 3, 1, 2)
    ze = encoder(P, c, x)
    N, D, hq, wq = ze.shape
    flat = ze.permute(0, 2, 3, 1).reshape(-1, D)
    codes = nearest(flat.detach(), e)
    zq = e[codes]
    commit = c['beta'] * ((flat - zq.detach()) ** 2).mean()
    st = flat + (zq - flat).detach()
    y = decoder(P, c, st.reshape(N, hq, wq, D).permute(0, 3, 1, 2))
    mse = ((y - x) ** 2).mean()
    return dict(ze=flat, codes=codes, y=y.permute(0, 2, 3, 1), mse=mse, recon=mse / data_var, commit=commit,
                loss=mse / data_var + commit)


def ema_update(c, S, flat, codes):
    """S: dict of float64 numpy arrays (codebook, ema_count, ema_sum); returns the updated ones."""
    K = c['codes']
    onehot = np.zeros((flat.shape[0], K))
    onehot[np.arange(flat.shape[0]), codes] = 1
    cnt, sums = onehot.sum(0), onehot.T @ flat
    dec, t = c['decay'], c['updates'] + 1
    bc = 1 - dec ** t
    ec = S['ema_count'] - (S['ema_count'] - cnt) * (1 - dec)
    es = S['ema_sum'] - (S['ema_sum'] - sums) * (1 - dec)
    n = (ec / bc).sum()
    cs = (ec / bc + c['epsilon']) / (n + K * c['epsilon']) * n
    return dict(codebook=es / bc / cs[:, None], ema_count=ec, ema_sum=es)


def cmd_step(a):
    dtype = torch.float64 if a.float64 else torch.float32
    T, meta = load_safetensors(a.model)
    c = config_of(meta)
    P = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in T.items()
         if not k.startswith('quantizer.')}
    e = torch.tensor(T['quantizer.codebook'], dtype=dtype)
    X, _ = load_safetensors(a.images)
    x = torch.tensor(X['images'], dtype=dtype)
    o = forward(P, c, e, x, a.data_var)
    o['loss'].backward()
    S = {k: T['quantizer.' + k].astype(np.float64) for k in ('codebook', 'ema_count', 'ema_sum')}
    U = ema_update(c, S, o['ze'].detach().double().numpy(), o['codes'].numpy())
    out = {'reconstruction': o['y'].detach().numpy(), 'z_e': o['ze'].detach().numpy(),
           'codes': o['codes'].numpy().astype(np.int64),
           'losses': np.array([o['loss'].item(), o['recon'].item(), o['mse'].item(), o['commit'].item()])}
    for k, p in P.items():
        out['grad.' + k] = p.grad.numpy()
    for k, v in U.items():
        out['updated.' + k] = v
    save_safetensors(a.out, out, {'torch': torch.__version__, 'dtype': str(dtype)})
    print(json.dumps({'loss': o['loss'].item(), 'recon': o['recon'].item(), 'commit': o['commit'].item(),
                      'codes_used': int(len(set(o['codes'].tolist())))}))


def init_params(c, g):
    """PyTorch-default-like uniform init in the Go layouts (only shapes matter for timing)."""
    P = {}
    H, Hr, D = c['hidden'], c['res_hidden'], c['code_dim']

    def add(name, k, cin, cout, nbias=None):
        bound = 1 / math.sqrt(k * k * cin)
        P[name + '.weight'] = ((torch.rand(k, k, cin, cout, generator=g) * 2 - 1) * bound).requires_grad_()
        P[name + '.bias'] = ((torch.rand(nbias or cout, generator=g) * 2 - 1) * bound).requires_grad_()

    L = levels(c)
    cin = 3
    for i in range(L):
        cout = H if i == L - 1 else H // 2
        add(f'encoder.down.{i}', 4, cin, cout)
        cin = cout
    add('encoder.conv', 3, H, H)
    for pre in ('encoder', 'decoder'):
        if pre == 'decoder':
            add('decoder.conv', 3, D, H)
        for r in range(c['res_blocks']):
            add(f'{pre}.res.{r}.conv3', 3, H, Hr)
            add(f'{pre}.res.{r}.conv1', 1, Hr, H)
        if pre == 'encoder':
            add('encoder.pre_vq', 1, H, D)
    cin = H
    for i in range(L):
        cout = 3 if i == L - 1 else H // 2
        add(f'decoder.up.{i}', 4, cout, cin, nbias=cout)  # [KH, KW, C_out, C_in], bias [C_out]
        cin = cout
    return P


def cmd_bench(a):
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(1)
    c = dict(hidden=128, res_hidden=32, res_blocks=2, codes=512, code_dim=64, factor=a.factor, beta=0.25,
             decay=0.99, epsilon=1e-5, dead_after=0, updates=0)
    P = init_params(c, g)
    e = torch.randn(c['codes'], c['code_dim'], generator=g)
    ec, es = torch.zeros(c['codes']), torch.zeros(c['codes'], c['code_dim'])
    opt = torch.optim.Adam(list(P.values()), lr=3e-4)
    x = torch.rand(a.batch, a.size, a.size, 3, generator=g) - 0.5

    def step(t):
        nonlocal e
        opt.zero_grad(set_to_none=False)
        o = forward(P, c, e, x, 0.06)
        o['loss'].backward()
        with torch.no_grad():  # EMA update, as the Go step does
            onehot = F.one_hot(o['codes'], c['codes']).float()
            ec.sub_((ec - onehot.sum(0)) * 0.01)
            es.sub_((es - onehot.t() @ o['ze']) * 0.01)
            bc = 1 - 0.99 ** t
            n = (ec / bc).sum()
            cs = (ec / bc + 1e-5) / (n + c['codes'] * 1e-5) * n
            e = es / bc / cs[:, None]
        opt.step()

    for t in range(1, 4):
        step(t)
    t0 = time.perf_counter()
    for t in range(a.steps):
        step(t + 4)
    dt = (time.perf_counter() - t0) / a.steps
    print(json.dumps({'impl': 'torch', 'what': 'train_step', 'batch': a.batch, 'size': a.size, 'factor': a.factor,
                      'threads': a.threads, 'ms': dt * 1e3, 'images_per_s': a.batch / dt}))
    xe = torch.rand(a.encode_batch, a.size, a.size, 3, generator=g) - 0.5
    with torch.no_grad():
        def enc():
            ze = encoder(P, c, xe.permute(0, 3, 1, 2))
            return nearest(ze.permute(0, 2, 3, 1).reshape(-1, c['code_dim']), e)
        enc()
        t0 = time.perf_counter()
        for _ in range(a.encode_reps):
            enc()
        dt = (time.perf_counter() - t0) / a.encode_reps
    print(json.dumps({'impl': 'torch', 'what': 'encode', 'batch': a.encode_batch, 'size': a.size, 'factor': a.factor,
                      'threads': a.threads, 'ms': dt * 1e3, 'images_per_s': a.encode_batch / dt}))


def cmd_encode(a):
    import io
    import tarfile
    from PIL import Image
    torch.set_num_threads(a.threads)
    T, meta = load_safetensors(a.model)
    c = config_of(meta)
    P = {k: torch.tensor(v) for k, v in T.items() if not k.startswith('quantizer.')}
    e = torch.tensor(T['quantizer.codebook'])
    imgs = []
    with tarfile.open(a.archive) as tf:
        for m in tf:
            if m.isfile() and m.name.lower().endswith(('.png', '.jpg', '.jpeg')):
                im = Image.open(io.BytesIO(tf.extractfile(m).read())).convert('RGB')
                imgs.append(np.asarray(im, dtype=np.uint8))
    x = torch.tensor(np.stack(imgs)).float() / 255 - 0.5
    n = x.shape[0]
    codes = torch.empty(n * (x.shape[1] // c['factor']) * (x.shape[2] // c['factor']), dtype=torch.int64)
    with torch.no_grad():
        t0 = time.perf_counter()
        off = 0
        for i in range(0, n, a.batch):
            ze = encoder(P, c, x[i:i + a.batch].permute(0, 3, 1, 2))
            k = nearest(ze.permute(0, 2, 3, 1).reshape(-1, c['code_dim']), e)
            codes[off:off + k.shape[0]] = k
            off += k.shape[0]
        dt = time.perf_counter() - t0
    print(json.dumps({'impl': 'torch', 'what': 'encode_all', 'images': n, 'batch': a.batch, 'factor': c['factor'],
                      'threads': a.threads, 's': dt, 'images_per_s': n / dt,
                      'codes_used': int(torch.unique(codes).numel())}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('step', help='forward, losses, gradients and EMA update of one batch')
    p.add_argument('--model', required=True)
    p.add_argument('--images', required=True, help='safetensors with "images" [N, H, W, 3] F32')
    p.add_argument('--data-var', type=float, required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--float64', action='store_true')
    p = sub.add_parser('bench', help='time a training step and encoding, default config')
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--factor', type=int, default=4)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--encode-batch', type=int, default=256)
    p.add_argument('--encode-reps', type=int, default=5)
    p = sub.add_parser('encode', help='time encoding every image of a tar with a trained model')
    p.add_argument('--model', required=True)
    p.add_argument('--archive', required=True)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    {'step': cmd_step, 'bench': cmd_bench, 'encode': cmd_encode}[a.cmd](a)


if __name__ == '__main__':
    sys.exit(main())
