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
// optimised with L-BFGS from gonum.org/v1/gonum/optimize using the analytic
// gradient, in float64. One evaluation of f and ∇f is two GEMMs (X·Wᵀ and
// Gᵀ·X) split over GOMAXPROCS goroutines; the split into work items does not
// depend on the number of goroutines and every sum is reduced in a fixed
// order, so a fit gives bit-identical weights at any GOMAXPROCS.
//
// The pieces:
//
//   - Matrix, Standardizer, HoldOut: dense row-major float64 features,
//     StandardScaler-style standardisation, a seeded validation split.
//   - Fit / FitC, Model.Predict, Accuracy, Model.CrossEntropy: the regression.
//   - SelectL2: one fit per grid value, chosen by validation accuracy.
//   - ProbeLayers / ProbeBaseline and Report (JSON, Markdown, PNG plot).
//   - FeatureSet / AssembleSplits: matrices from records.Features streams.
package probe
