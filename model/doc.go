// Package model is the iGPT transformer (Chen et al., "Generative
// Pretraining from Pixels"), as openai/image-gpt and Hugging Face's
// ImageGPT compute it, on the float32 kernels of internal/kernels.
//
// The model: tokens x[0..T) from a palette of V colours; L pre-norm blocks
// h += attn(norm(h)), h += mlp(norm(h)) with the gain-only RMS norm
// x·g/sqrt(mean(x²)+1e-5), H-head attention, a 4d quick-GELU MLP and no
// biases; logits = norm(h_L)·lm_headᵀ with an untied head. Two objectives:
//
//	AR    input [sos, emb(x0 … x_{T-2})] + wpe, causal, loss = mean CE over all B·T positions
//	BERT  input emb(x_t) + wpe with masked positions zeroed, no mask,
//	      loss = mean CE over the masked positions (0 if none)
//
// Parameters live in one []float32 (Params) with views named and shaped as
// Hugging Face's ImageGPT checkpoints (wte [V+1,d] with the start vector as
// row V, c_attn [d,3d] used as x·W, lm_head [V,d] used as x·Wᵀ, …).
// The forward and backward passes are written layer by layer in the style
// of llm.c (encoderForward/Backward, blockForward/Backward, head…), over
// activations allocated once per batch shape, so a training step does not
// allocate. Model.Forward keeps the hidden state of every layer for linear
// probes; Model.Probe computes every layer's probe features in a
// forward-only pass whose memory does not grow with the batch.
//
// Model.Precision BF16 runs the blocks' linear layers of a training step
// (forward and backward) on kernels.SgemmBF16: bf16 operands, fp32
// accumulation, fp32 master weights, gradients, optimizer state and loss;
// attention, norms, GELU and the LM head stay fp32 (see Precision).
//
// Training uses Adam (β = 0.9, 0.95) with optional decoupled weight decay
// and gradient clipping (Optimizer) under a linear warm-up + cosine
// Schedule. Checkpoints are safetensors (a small reader and writer of our
// own) with Hugging Face names; WriteHFConfig, WriteHFModel and ReadHF
// exchange config.json + model.safetensors with transformers'
// ImageGPTForCausalImageModeling (package tools does the files, local or
// gs://).
//
// Tensors at package boundaries: where named n-d arrays leave a package,
// they are gorgonia.org/tensor Dense tensors over the kernels' []float32
// (tensor.WithBacking, no copy): a parameter's Tensor.Dense, the VQ-VAE's
// Weights and optimizer moments, written with WTensorOf and read straight
// into a model's memory with STTensor.Into. Inside the hot loops
// (internal/kernels, the forward and backward passes, the Sampler) the
// arrays stay []float32 with explicit shapes: gorgonia's generic
// element access and its allocation per operation would cost speed and
// the zero-allocation training step. Three boundaries do not use it, on
// purpose: Params keeps one flat []float32 (one allocation, one optimizer
// sweep, views per layer); records.Features carries a []float32 vector
// through Beam, whose coder would have to learn a tensor type for a 1-D
// array; and the checkpoint's F64 entries (VQ-VAE's unused counters) are
// plain []float64.
//
// ../shared/bench/igpt_reference.py is the PyTorch reference these
// computations are tested against (testdata/ holds fixtures it wrote).
package model
