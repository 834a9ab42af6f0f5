package kernels

import (
	"fmt"
	"os"
	"strings"
)

// gemmKernel is a micro-kernel: C[0:mr, 0:nr] (row stride ldc) =
// alpha*A·B (+ beta*C unless beta == 0) over kc steps, where A[i,p] is at
// a[i*sa+p] (row-addressed) or a[i+p*sa] (column-addressed) and B is packed
// k-major, nr wide: b[p*nr+j].
type gemmKernel func(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)

// impl is one dispatch path: its micro-kernel shape and assembly routines.
type impl struct {
	name   string
	mr, nr int
	row    gemmKernel // A row-addressed
	col    gemmKernel // A column-addressed
	// transpose8, if not nil, transposes 8x8 blocks (see transpose8).
	transpose8 func(n8 int, src *float32, lds int, dst *float32, ldd int)
	// packRows, if not nil, copies rows of nr floats (src stride lds) to
	// dst contiguously: packB's full panels of B.
	packRows func(dst, src *float32, lds, rows int)
	// vec, if not nil, holds the vectorised element-wise routines (exp,
	// max, GELU, RMS norm rows, AdamW, attention's dS).
	vec *vecOps
	// bf16, if not nil, holds the AVX512_BF16 kernels of SgemmBF16 (mr×nr).
	bf16 *bf16Ops
}

var (
	paths []*impl // available, slowest first; paths[0] is generic
	cur   *impl   // the path in use
)

// EnvVar names the environment variable that forces a dispatch path:
// "generic" (portable Go), "avx2" or "avx512". A path the CPU lacks falls
// back to the best one it has. It is read once, at start-up.
const EnvVar = "IGPT_KERNELS"

func init() {
	paths = append([]*impl{genericImpl}, archPaths()...)
	cur = paths[len(paths)-1]
	if want := strings.TrimSpace(os.Getenv(EnvVar)); want != "" {
		found := false
		for _, p := range paths {
			if p.name == want {
				cur, found = p, true
			}
		}
		if !found && want != "avx512" && want != "avx2" {
			fmt.Fprintf(os.Stderr, "kernels: %s=%q unknown (want generic, avx2 or avx512); using %s\n", EnvVar, want, cur.name)
		}
		if !found && want == "avx2" {
			cur = paths[0]
		}
	}
}

// Path returns the name of the dispatch path in use: "avx512", "avx2" or
// "generic".
func Path() string { return cur.name }

// Paths returns the dispatch paths this CPU supports, slowest first.
func Paths() []string {
	s := make([]string, len(paths))
	for i, p := range paths {
		s[i] = p.name
	}
	return s
}

// SetPath switches the dispatch path (one of Paths()) and returns the
// previous one. It is meant for tests and benchmarks; do not call it while
// kernels run.
func SetPath(name string) (string, error) {
	old := cur.name
	for _, p := range paths {
		if p.name == name {
			thePool.mu.Lock()
			cur = p
			thePool.mu.Unlock()
			return old, nil
		}
	}
	return old, fmt.Errorf("kernels: path %q not available (have %v)", name, Paths())
}
