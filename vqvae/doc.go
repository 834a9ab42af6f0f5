// Package vqvae is the VQ-VAE of van den Oord, Vinyals and Kavukcuoglu
// ("Neural Discrete Representation Learning", 2017) in the form of
// DeepMind Sonnet's vqvae_example, on the float32 convolution kernels of
// internal/kernels. Images are NHWC float32 in [-0.5, 0.5] (pixel/255 −
// 0.5); f is the downsampling factor (2, 4 or 8), L = log2 f.
//
//	Encoder  x[N,S,S,3]
//	         L × (conv 4×4 stride 2 pad 1 + ReLU): the last to hidden, the
//	             ones before it to hidden/2 (Sonnet's f = 4 encoder: 3 →
//	             hidden/2 → hidden)
//	         conv 3×3 hidden → hidden
//	         R × residual block: h += conv1×1(ReLU(conv3×3(ReLU(h))))
//	             (3×3 to res_hidden, 1×1 back to hidden), then ReLU
//	         conv 1×1 hidden → D                          z_e [N,S/f,S/f,D]
//	Quantizer  code(i) = argmin_k ‖z_e(i) − e_k‖² over the K×D codebook,
//	         one GEMM z_e·eᵀ per batch; z_q = e[code]; straight-through
//	         gradient; commitment loss β·mean((z_e − sg(z_q))²)
//	Decoder  conv 3×3 D → hidden; R residual blocks and ReLU as above;
//	         L × transposed conv 4×4 stride 2 pad 1: the last to 3 channels
//	         (no activation), the ones before it to hidden/2 with ReLU
//	Loss     mean((x̂ − x)²)/var(training pixels) + β·mean((z_e − sg(z_q))²)
//
// Every convolution has a bias. The codebook is not trained by gradients:
// it follows exponential moving averages of the counts and sums of the
// encoder outputs assigned to each code, debiased as Sonnet's
// ExponentialMovingAverage does (hidden/(1 − decay^t)), with Laplace
// smoothing of the counts, e_k = sum_k / ((n_k + ε)/(n + Kε)·n). A code
// unused for DeadAfter consecutive updates is restarted on an encoder
// output of the current batch, drawn with a generator seeded by the update
// number, so training is reproducible and resumable.
//
// Weights use TensorFlow's layouts: a convolution's weight is [KH,KW,C,OC]
// and a transposed convolution's [KH,KW,OC,C] (the weight of the
// convolution it is the adjoint of); PyTorch's layout of both is
// w.permute(3, 2, 0, 1). bench/vqvae_reference.py is the same model in
// PyTorch and checks this package's forward pass and gradients.
package vqvae
