// Package probe fits and reports the linear probe of Generative Pretraining
// from Pixels (Chen et al., 2020): for every layer l of a model, the feature of
// an image is the mean over positions of norm(h_l); a multinomial logistic
// regression is fitted on the train split's features, its L2 strength is chosen
// by accuracy on a validation split from a small grid, and the test accuracy of
// the chosen fit is reported per layer. The best layer is expected in the middle
// of the network.
//
// The regression minimises exactly scikit-learn's objective
// (LogisticRegression(multi_class='multinomial', solver='lbfgs')), written per
// example:
//
//	f(W, b) = (1/n) Σᵢ CE(softmax(W xᵢ + b), yᵢ) + (λ/2) |W|²
//
// with the bias b not penalised and λ = 1/(C·n) for scikit-learn's C. It is
// optimised with L-BFGS from gonum.org/v1/gonum/optimize (float64 weights,
// SciPy L-BFGS-B's stopping tests and its cap of 20 evaluations per line
// search) using the analytic gradient. The features stay in float32: one
// evaluation of f and ∇f is two float32 GEMMs on internal/kernels' SGEMM
// (logits Zᵀ = W·Xᵀ, gradient Gᵀ·X), run on the kernels' worker pool over
// row blocks of X small enough to stay in cache between the two; the softmax,
// the loss and the bias gradient are summed in float64, and an evaluation
// allocates nothing. Every sum has a fixed order, so a fit gives
// bit-identical weights for the same inputs, at any thread count. The
// float32 products put f's rounding at ~1e-9 relative, the scale of SciPy's
// own ftol test; a line search that fails once f has stopped improving
// beyond that counts as converged.
//
// The pieces:
//
//   - Matrix, Standardizer, HoldOut: dense row-major float32 features,
//     StandardScaler-style standardisation (statistics in float64), a seeded
//     validation split.
//   - Fit / FitC, Model.Predict, Accuracy, Model.CrossEntropy: the regression.
//   - SelectL2: one fit per grid value, warm-started from strong to weak λ,
//     chosen by validation accuracy.
//   - Layers / Baseline and Report (JSON, Markdown, PNG plot).
//   - LowData: the low-data probe (k labels per class, seeded draws, mean ±
//     std); Concat / ConcatRow: a probe on several layers side by side.
//   - PixelFeatures: raw-pixel features at any resolution (imgproc.Resize,
//     as quantize resizes), for the baselines at the original and the
//     model's input size.
//   - FeatureSet / AssembleSplits: matrices from records.Features streams.
//
// Feature matrices cross the package boundary as *Matrix (rows, cols and a
// []float32), not as gorgonia tensors: every use here is a 2-D row-major
// float32 matrix handed to the kernels' SGEMM as a slice, and the package's
// callers (the probe stage) only pass Splits from AssembleSplits to Layers.
// Matrix.Tensor and MatrixFromTensor convert to and from a gorgonia
// *tensor.Dense without copying, for callers that hold one.
package probe
