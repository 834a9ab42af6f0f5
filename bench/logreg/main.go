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
// StandardScaler does on float32 input; the fit itself is float64, like
// scikit-learn's lbfgs solver. -C fixes scikit-learn's C (λ = 1/(C·n)); -C-grid
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

func run() error {
	rawCIFAR := flag.String("raw-cifar", "", "TRAIN,TEST CIFAR binary-layout files")
	trainX := flag.String("train-x", "", "train features .npy [N, D]")
	trainY := flag.String("train-y", "", "train labels .npy [N]")
	testX := flag.String("test-x", "", "test features .npy [M, D]")
	testY := flag.String("test-y", "", "test labels .npy [M]")
	standardize := flag.Bool("standardize", false, "standardise features with train mean/std")
	c := flag.Float64("C", 1, "scikit-learn's inverse L2 strength C (λ = 1/(C·n))")
	cGrid := flag.String("C-grid", "", "comma-separated C values chosen on a validation hold-out of train")
	valFrac := flag.Float64("val-frac", 0.2, "hold-out fraction for -C-grid")
	seed := flag.Uint64("seed", 0, "hold-out seed for -C-grid")
	maxIter := flag.Int("max-iter", probe.DefaultMaxIter, "L-BFGS iteration limit")
	tol := flag.Float64("tol", probe.DefaultTol, "scikit-learn's tol (max |gradient| of its sum-scaled objective)")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()
	if *verbose {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}

	var tr, te data
	var err error
	switch {
	case *rawCIFAR != "":
		files := strings.Split(*rawCIFAR, ",")
		if len(files) != 2 {
			return fmt.Errorf("-raw-cifar wants TRAIN,TEST, got %q", *rawCIFAR)
		}
		if tr, err = readCIFAR(files[0]); err != nil {
			return err
		}
		if te, err = readCIFAR(files[1]); err != nil {
			return err
		}
	case *trainX != "" && *trainY != "" && *testX != "" && *testY != "":
		if tr, err = readNpyPair(*trainX, *trainY); err != nil {
			return err
		}
		if te, err = readNpyPair(*testX, *testY); err != nil {
			return err
		}
	default:
		return errors.New("give -raw-cifar TRAIN,TEST or all of -train-x -train-y -test-x -test-y")
	}
	if tr.d != te.d {
		return fmt.Errorf("train has %d features, test %d", tr.d, te.d)
	}
	classes := 0
	for _, y := range [][]int{tr.y, te.y} {
		for _, l := range y {
			classes = max(classes, l+1)
		}
	}
	fmt.Printf("# go %s GOMAXPROCS=%d\n", runtime.Version(), runtime.GOMAXPROCS(0))
	fmt.Printf("data: train=%dx%d test=%dx%d classes=%d standardize=%d dtype=float32\n",
		tr.n, tr.d, te.n, te.d, classes, b2i(*standardize))

	opts := probe.Options{MaxIter: *maxIter, Tol: *tol, Classes: classes}
	chosen := *c
	if *cGrid != "" {
		full, err := probe.NewMatrix(tr.n, tr.d, tr.x)
		if err != nil {
			return err
		}
		fx, fy, vx, vy, err := probe.HoldOut(full, tr.y, *valFrac, *seed)
		if err != nil {
			return err
		}
		if *standardize {
			if err := standardize32(fx, vx); err != nil {
				return err
			}
		}
		bestAcc := -1.0
		for _, s := range strings.Split(*cGrid, ",") {
			cv, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return fmt.Errorf("-C-grid %q: %w", *cGrid, err)
			}
			res, err := probe.FitC(fx, fy, cv, opts)
			if err != nil {
				return err
			}
			acc, err := res.Model.Accuracy(vx, vy)
			if err != nil {
				return err
			}
			fmt.Printf("grid C=%g val_acc: %.4f fit_s: %.2f iterations: %d converged: %s\n",
				cv, acc, res.Seconds, res.Iterations, yesNo(res.Converged))
			if acc > bestAcc {
				bestAcc, chosen = acc, cv
			}
		}
	}

	xtr, err := probe.NewMatrix(tr.n, tr.d, tr.x)
	if err != nil {
		return err
	}
	xte, err := probe.NewMatrix(te.n, te.d, te.x)
	if err != nil {
		return err
	}
	if *standardize {
		if err := standardize32(xtr, xte); err != nil {
			return err
		}
	}
	res, err := probe.FitC(xtr, tr.y, chosen, opts)
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
	fmt.Printf("logreg C: %g\n", chosen)
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
	le := binary.LittleEndian
	for i := range out {
		b := raw[i*size : (i+1)*size]
		switch dm[2] + dm[3] {
		case "f4":
			out[i] = float64(math.Float32frombits(le.Uint32(b)))
		case "f8":
			out[i] = math.Float64frombits(le.Uint64(b))
		case "i1":
			out[i] = float64(int8(b[0]))
		case "u1":
			out[i] = float64(b[0])
		case "i2":
			out[i] = float64(int16(le.Uint16(b)))
		case "u2":
			out[i] = float64(le.Uint16(b))
		case "i4":
			out[i] = float64(int32(le.Uint32(b)))
		case "u4":
			out[i] = float64(le.Uint32(b))
		case "i8":
			out[i] = float64(int64(le.Uint64(b)))
		case "u8":
			out[i] = float64(le.Uint64(b))
		default:
			return nil, nil, fmt.Errorf("%s: dtype %s%s not supported", path, dm[2], dm[3])
		}
	}
	return out, shape, nil
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
