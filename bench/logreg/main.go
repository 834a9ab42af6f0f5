// Command logreg is the Go side of bench/logreg_vs_sklearn.sh: it fits the
// linear probe's multinomial logistic regression (internal/probe) on the same
// inputs as ../shared/bench/logreg_sklearn.py and prints the same greppable
// lines, so the two can be compared side by side.
//
// Inputs, as in logreg_sklearn.py:
//
//	-raw-cifar TRAIN,TEST   CIFAR binary-layout files (1 label byte + 3072 pixel
//	                        bytes): pixels/255 as float32 [N, 3072] in record
//	                        order (R plane, G, B)
//	-train-x F -train-y F -test-x F -test-y F
//	                        .npy features float32/float64 [N, D] and integer labels [N]
//
// -standardize fits the standardiser on train and applies it to both, rounding
// to float32 after the subtraction and after the division as scikit-learn's
// StandardScaler does on float32 input. scikit-learn's lbfgs solver fits in
// float64; ours keeps the features in float32 and runs the fit's two matrix
// products in float32 (internal/kernels' SGEMM), with the loss summed and
// L-BFGS run in float64. -C fixes scikit-learn's C (λ = 1/(C·n)); -C-grid
// picks C by accuracy on a seeded -val-frac hold-out of train and refits on all
// of train (our hold-out is not numpy's permutation, so grid choices are
// comparable with the script's only in spirit).
//
// Prints:
//
//	data: train=NxD test=MxD classes=K standardize=0|1
//	grid C=X val_acc: A fit_s: S iterations: N converged: yes|no
//	logreg C: X
//	logreg fit_s: S
//	logreg iterations: N (converged: yes|no)
//	logreg train_acc: A
//	logreg test_acc: A
//	logreg train_ce: X
//	logreg objective: F grad_max: G evaluations: E status: S
//
// Usage (from the repository root):
//
//	D=../shared/data/cifar10-exact-subset
//	GOMAXPROCS=2 go run ./bench/logreg -raw-cifar $D/data_batch_1_first4000.bin,$D/test_batch_first1000.bin -standardize -C 0.001
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/igpt/igpt/internal/probe"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "logreg:", err)
		os.Exit(1)
	}
}

type data struct {
	x    []float32
	y    []int
	n, d int
}

type flags struct {
	rawCIFAR, trainX, trainY, testX, testY string
	standardize                            bool
	c                                      float64
	cGrid                                  string
	valFrac                                float64
	seed                                   uint64
}

func run() error {
	var f flags
	flag.StringVar(&f.rawCIFAR, "raw-cifar", "", "TRAIN,TEST CIFAR binary-layout files")
	flag.StringVar(&f.trainX, "train-x", "", "train features .npy [N, D]")
	flag.StringVar(&f.trainY, "train-y", "", "train labels .npy [N]")
	flag.StringVar(&f.testX, "test-x", "", "test features .npy [M, D]")
	flag.StringVar(&f.testY, "test-y", "", "test labels .npy [M]")
	flag.BoolVar(&f.standardize, "standardize", false, "standardise features with train mean/std")
	flag.Float64Var(&f.c, "C", 1, "scikit-learn's inverse L2 strength C (λ = 1/(C·n))")
	flag.StringVar(&f.cGrid, "C-grid", "", "comma-separated C values chosen on a validation hold-out of train")
	flag.Float64Var(&f.valFrac, "val-frac", 0.2, "hold-out fraction for -C-grid")
	flag.Uint64Var(&f.seed, "seed", 0, "hold-out seed for -C-grid")
	maxIter := flag.Int("max-iter", probe.DefaultMaxIter, "L-BFGS iteration limit")
	tol := flag.Float64("tol", probe.DefaultTol, "scikit-learn's tol (max |gradient| of its sum-scaled objective)")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()
	if *verbose {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	tr, te, err := load(f)
	if err != nil {
		return err
	}
	classes := 0
	for _, y := range [][]int{tr.y, te.y} {
		for _, l := range y {
			classes = max(classes, l+1)
		}
	}
	fmt.Printf("# go %s GOMAXPROCS=%d\n", runtime.Version(), runtime.GOMAXPROCS(0))
	fmt.Printf("data: train=%dx%d test=%dx%d classes=%d standardize=%d dtype=float32\n",
		tr.n, tr.d, te.n, te.d, classes, b2i(f.standardize))
	opts := probe.FitOptions{MaxIter: *maxIter, Tol: *tol, Classes: classes}
	chosen := f.c
	if f.cGrid != "" {
		if chosen, err = chooseC(f, tr, opts); err != nil {
			return err
		}
	}
	return fitAndReport(f, tr, te, chosen, opts)
}

// load reads the train and test sets named by the flags.
func load(f flags) (tr, te data, err error) {
	switch {
	case f.rawCIFAR != "":
		files := strings.Split(f.rawCIFAR, ",")
		if len(files) != 2 {
			return tr, te, fmt.Errorf("-raw-cifar wants TRAIN,TEST, got %q", f.rawCIFAR)
		}
		if tr, err = readCIFAR(files[0]); err != nil {
			return tr, te, err
		}
		te, err = readCIFAR(files[1])
	case f.trainX != "" && f.trainY != "" && f.testX != "" && f.testY != "":
		if tr, err = readNpyPair(f.trainX, f.trainY); err != nil {
			return tr, te, err
		}
		te, err = readNpyPair(f.testX, f.testY)
	default:
		err = errors.New("give -raw-cifar TRAIN,TEST or all of -train-x -train-y -test-x -test-y")
	}
	if err == nil && tr.d != te.d {
		err = fmt.Errorf("train has %d features, test %d", tr.d, te.d)
	}
	return tr, te, err
}

// chooseC fits every C of -C-grid on a hold-out of train and returns the
// one with the best validation accuracy (the first on ties).
func chooseC(f flags, tr data, opts probe.FitOptions) (float64, error) {
	full, err := probe.NewMatrix(tr.n, tr.d, slices.Clone(tr.x))
	if err != nil {
		return 0, err
	}
	fx, fy, vx, vy, err := probe.HoldOut(full, tr.y, f.valFrac, f.seed)
	if err != nil {
		return 0, err
	}
	if f.standardize {
		if err := standardize32(fx, vx); err != nil {
			return 0, err
		}
	}
	bestAcc, chosen := -1.0, 0.0
	for _, s := range strings.Split(f.cGrid, ",") {
		cv, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return 0, fmt.Errorf("-C-grid %q: %w", f.cGrid, err)
		}
		res, err := probe.FitC(fx, fy, cv, opts)
		if err != nil {
			return 0, err
		}
		acc, err := res.Model.Accuracy(vx, vy)
		if err != nil {
			return 0, err
		}
		fmt.Printf("grid C=%g val_acc: %.4f fit_s: %.2f iterations: %d converged: %s\n",
			cv, acc, res.Seconds, res.Iterations, yesNo(res.Converged))
		if acc > bestAcc {
			bestAcc, chosen = acc, cv
		}
	}
	return chosen, nil
}

// fitAndReport fits all of train at C and prints the result lines.
func fitAndReport(f flags, tr, te data, c float64, opts probe.FitOptions) error {
	xtr, err := probe.NewMatrix(tr.n, tr.d, tr.x)
	if err != nil {
		return err
	}
	xte, err := probe.NewMatrix(te.n, te.d, te.x)
	if err != nil {
		return err
	}
	if f.standardize {
		if err := standardize32(xtr, xte); err != nil {
			return err
		}
	}
	res, err := probe.FitC(xtr, tr.y, c, opts)
	if err != nil {
		return err
	}
	trainAcc, err := res.Model.Accuracy(xtr, tr.y)
	if err != nil {
		return err
	}
	testAcc, err := res.Model.Accuracy(xte, te.y)
	if err != nil {
		return err
	}
	ce, err := res.Model.CrossEntropy(xtr, tr.y)
	if err != nil {
		return err
	}
	fmt.Printf("logreg C: %g\n", c)
	fmt.Printf("logreg fit_s: %.3f\n", res.Seconds)
	fmt.Printf("logreg iterations: %d (converged: %s)\n", res.Iterations, yesNo(res.Converged))
	fmt.Printf("logreg train_acc: %.4f\n", trainAcc)
	fmt.Printf("logreg test_acc: %.4f\n", testAcc)
	fmt.Printf("logreg train_ce: %.6f\n", ce)
	fmt.Printf("logreg objective: %.10g grad_max: %.3g evaluations: %d status: %s\n",
		res.Objective, res.GradNorm, res.Evaluations, res.Status)
	return nil
}

// standardize32 fits a standardiser on train and applies it to every matrix
// the way StandardScaler.transform does on a float32 array: x -= mean and
// x /= scale in place, each result rounded to float32.
func standardize32(train *probe.Matrix, others ...*probe.Matrix) error {
	s, err := probe.FitStandardizer(train)
	if err != nil {
		return err
	}
	for _, m := range append([]*probe.Matrix{train}, others...) {
		for i := 0; i < m.Rows; i++ {
			r := m.Row(i)
			for j, v := range r {
				t := float64(float32(float64(v) - s.Mean[j]))
				r[j] = float32(t / s.Scale[j])
			}
		}
	}
	return nil
}

// readCIFAR reads CIFAR-10 binary records: pixels/255 in float32, as
// np.uint8 / np.float32(255) computes them.
func readCIFAR(path string) (data, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return data{}, err
	}
	const rec = 3073
	if len(raw) == 0 || len(raw)%rec != 0 {
		return data{}, fmt.Errorf("%s: %d bytes is not a whole number of %d-byte CIFAR-10 records", path, len(raw), rec)
	}
	n := len(raw) / rec
	out := data{x: make([]float32, n*(rec-1)), y: make([]int, n), n: n, d: rec - 1}
	for i := 0; i < n; i++ {
		r := raw[i*rec : (i+1)*rec]
		out.y[i] = int(r[0])
		dst := out.x[i*(rec-1) : (i+1)*(rec-1)]
		for j, b := range r[1:] {
			dst[j] = float32(b) / float32(255)
		}
	}
	return out, nil
}

func readNpyPair(xf, yf string) (data, error) {
	x, xs, err := readNpy(xf)
	if err != nil {
		return data{}, err
	}
	y, ys, err := readNpy(yf)
	if err != nil {
		return data{}, err
	}
	if len(xs) != 2 || len(ys) != 1 || ys[0] != xs[0] {
		return data{}, fmt.Errorf("%s, %s: want features [N, D] and labels [N], got %v and %v", xf, yf, xs, ys)
	}
	out := data{x: make([]float32, len(x)), y: make([]int, len(y)), n: xs[0], d: xs[1]}
	for i, v := range x {
		out.x[i] = float32(v)
	}
	for i, v := range y {
		if v != math.Trunc(v) || v < 0 {
			return data{}, fmt.Errorf("%s: label %d is %v", yf, i, v)
		}
		out.y[i] = int(v)
	}
	return out, nil
}

var (
	descrRe = regexp.MustCompile(`'descr':\s*'([<>|=]?)([fiu])(\d)'`)
	orderRe = regexp.MustCompile(`'fortran_order':\s*(True|False)`)
	shapeRe = regexp.MustCompile(`'shape':\s*\(([^)]*)\)`)
)

// readNpy reads a C-order .npy array of float32/64 or (u)int8/16/32/64 as
// float64 values (exact for the integer labels and float32 features used here).
func readNpy(path string) ([]float64, []int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var magic [8]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil || string(magic[:6]) != "\x93NUMPY" {
		return nil, nil, fmt.Errorf("%s: not a .npy file", path)
	}
	var hlen int
	if magic[6] == 1 {
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	} else {
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		hlen = int(binary.LittleEndian.Uint32(b[:]))
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, nil, fmt.Errorf("%s: header: %w", path, err)
	}
	h := string(hdr)
	dm, om, sm := descrRe.FindStringSubmatch(h), orderRe.FindStringSubmatch(h), shapeRe.FindStringSubmatch(h)
	if dm == nil || om == nil || sm == nil {
		return nil, nil, fmt.Errorf("%s: cannot parse header %q", path, h)
	}
	if om[1] == "True" {
		return nil, nil, fmt.Errorf("%s: Fortran-order arrays are not supported", path)
	}
	if dm[1] == ">" {
		return nil, nil, fmt.Errorf("%s: big-endian arrays are not supported", path)
	}
	var shape []int
	count := 1
	for _, s := range strings.Split(sm[1], ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		v, err := strconv.Atoi(s)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: shape %q: %w", path, sm[1], err)
		}
		shape = append(shape, v)
		count *= v
	}
	size, _ := strconv.Atoi(dm[3])
	raw := make([]byte, count*size)
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, nil, fmt.Errorf("%s: data: %w", path, err)
	}
	out := make([]float64, count)
	for i := range out {
		v, ok := decodeNpy(dm[2]+dm[3], raw[i*size:(i+1)*size])
		if !ok {
			return nil, nil, fmt.Errorf("%s: dtype %s%s not supported", path, dm[2], dm[3])
		}
		out[i] = v
	}
	return out, shape, nil
}

// decodeNpy decodes one little-endian value of a .npy dtype (kind+size).
func decodeNpy(dtype string, b []byte) (float64, bool) {
	le := binary.LittleEndian
	switch dtype {
	case "f4":
		return float64(math.Float32frombits(le.Uint32(b))), true
	case "f8":
		return math.Float64frombits(le.Uint64(b)), true
	case "i1":
		return float64(int8(b[0])), true
	case "u1":
		return float64(b[0]), true
	case "i2":
		return float64(int16(le.Uint16(b))), true
	case "u2":
		return float64(le.Uint16(b)), true
	case "i4":
		return float64(int32(le.Uint32(b))), true
	case "u4":
		return float64(le.Uint32(b)), true
	case "i8":
		return float64(int64(le.Uint64(b))), true
	case "u8":
		return float64(le.Uint64(b)), true
	}
	return 0, false
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
