package kernels

import (
	"fmt"
	"math"
)

// do runs n tasks of the job stored in *slot (a package variable, so that
// passing it as an interface does not allocate) on the pool, then clears
// the slot so that it holds no caller memory.
func do[T any, PT interface {
	*T
	job
}](slot PT, val T, n int) {
	p := thePool
	p.mu.Lock()
	*slot = val
	p.runLocked(n, slot)
	var zero T
	*slot = zero
	p.mu.Unlock()
}

// chunks returns how many tasks to cut n rows of the given width into:
// enough for load balance, each worth at least ~32K elements.
func chunks(n, width int) int {
	t := n * width / (1 << 15)
	return max(1, min(t, n, 4*thePool.threads))
}

func span(t, tasks, n int) (lo, hi int) { return t * n / tasks, (t + 1) * n / tasks }

func need(name string, s []float32, n int) {
	if len(s) < n {
		panic(fmt.Sprintf("kernels: len(%s) = %d < %d", name, len(s), n))
	}
}

// ---------------------------------------------------------------- embedding

// EmbeddingForward gathers rows of a table:
//
//	out[N, C] = table[ids[n], :]   (table [V, C], ids [N])
//
// A negative id gives a zero row (BERT's masked inputs).
func EmbeddingForward(out []float32, ids []int32, table []float32, C int) {
	N := len(ids)
	need("out", out, N*C)
	do(&theEmbFwd, embFwdJob{out, ids, table, C, chunks(N, C)}, chunks(N, C))
}

type embFwdJob struct {
	out   []float32
	ids   []int32
	table []float32
	C, t  int
}

var theEmbFwd embFwdJob

func (j *embFwdJob) run(t, _ int) {
	lo, hi := span(t, j.t, len(j.ids))
	C := j.C
	for n := lo; n < hi; n++ {
		row := j.out[n*C : n*C+C]
		if id := int(j.ids[n]); id >= 0 {
			copy(row, j.table[id*C:id*C+C])
		} else {
			clear(row)
		}
	}
}

// EmbeddingBackward scatter-adds the output gradient into the table's:
//
//	dtable[ids[n], :] += dout[n, :]   (dtable [V, C], dout [N, C])
//
// Negative ids are skipped. Workers own disjoint column ranges, so the sums
// are race-free and deterministic.
func EmbeddingBackward(dtable []float32, ids []int32, dout []float32, C int) {
	N := len(ids)
	need("dout", dout, N*C)
	tasks := max(1, min(C/16, 4*thePool.threads))
	if N*C < 1<<15 {
		tasks = 1
	}
	do(&theEmbBwd, embBwdJob{dtable, ids, dout, C, tasks}, tasks)
}

type embBwdJob struct {
	dtable []float32
	ids    []int32
	dout   []float32
	C, t   int
}

var theEmbBwd embBwdJob

func (j *embBwdJob) run(t, _ int) {
	c0, c1 := span(t, j.t, j.C)
	C := j.C
	for n, id := range j.ids {
		if id < 0 {
			continue
		}
		d := j.dtable[int(id)*C+c0 : int(id)*C+c1]
		g := j.dout[n*C+c0 : n*C+c1]
		for i := range d {
			d[i] += g[i]
		}
	}
}

// ----------------------------------------------------------------- RMS norm

// RMSNormEps is the ε of the gain-only RMS norm.
const RMSNormEps = 1e-5

// RMSNormForward is the gain-only RMS norm of each row:
//
//	out[N, C] = x[N, C] · g[C] / sqrt(mean(x²) + 1e-5)
//
// and saves rstd[N] = 1/sqrt(mean(x²) + 1e-5) for the backward pass (rstd
// may be nil).
func RMSNormForward(out, rstd, x, g []float32, N, C int) {
	need("out", out, N*C)
	need("x", x, N*C)
	need("g", g, C)
	do(&theRMSFwd, rmsFwdJob{out, nil, rstd, x, g, N, C, chunks(N, C)}, chunks(N, C))
}

// RMSNormForwardBF16 is RMSNormForward with its output rounded to bf16
// (out16 [N,C], bit for bit ToBF16 of RMSNormForward's out): the fp32
// output is never written, only one row of it in per-worker scratch.
func RMSNormForwardBF16(out16 []uint16, rstd, x, g []float32, N, C int) {
	if len(out16) < N*C {
		panic(fmt.Sprintf("kernels: len(out16) = %d < %d", len(out16), N*C))
	}
	need("x", x, N*C)
	need("g", g, C)
	do(&theRMSFwd, rmsFwdJob{nil, out16, rstd, x, g, N, C, chunks(N, C)}, chunks(N, C))
}

// curRMS returns the current path's RMS norm rows, nil for the Go loops.
func curRMS() *rmsOps {
	if cur.vec == nil {
		return nil
	}
	return cur.vec.rms
}

type rmsFwdJob struct {
	out        []float32
	out16      []uint16 // instead of out (RMSNormForwardBF16)
	rstd, x, g []float32
	N, C, t    int
}

var theRMSFwd rmsFwdJob

func (j *rmsFwdJob) run(t, w int) {
	lo, hi := span(t, j.t, j.N)
	C := j.C
	g := j.g[:C]
	var row []float32
	if j.out16 != nil {
		ws := &thePool.workers[w].ws
		ws.row = grow(ws.row, C)
		row = ws.row
	}
	ops := curRMS()
	for n := lo; n < hi; n++ {
		x := j.x[n*C : n*C+C]
		var ss float32
		if ops != nil {
			ss = ops.sumSq(&x[0], C)
		} else {
			for _, v := range x {
				ss += v * v
			}
		}
		r := float32(1 / math.Sqrt(float64(ss/float32(C))+RMSNormEps))
		if j.rstd != nil {
			j.rstd[n] = r
		}
		o := row
		if o == nil {
			o = j.out[n*C : n*C+C]
		}
		if ops != nil {
			ops.scaleMul(&o[0], &x[0], &g[0], C, r)
		} else {
			for i, v := range x {
				o[i] = v * r * g[i]
			}
		}
		if j.out16 != nil {
			toBF16Seq(j.out16[n*C:n*C+C], o)
		}
	}
}

// RMSNormBackward accumulates the gradients of RMSNormForward:
//
//	dx[N, C] += r·g·dy − r³/C · x · Σ_c(g·dy·x)      (r = rstd[n])
//	dg[C]    += Σ_n dy · x · r
//
// Each task sums its rows' dg into its own buffer; the buffers are added in
// task order, so the result does not depend on the thread count's timing.
func RMSNormBackward(dx, dg, dy, x, g, rstd []float32, N, C int) {
	need("dx", dx, N*C)
	need("dy", dy, N*C)
	need("x", x, N*C)
	need("rstd", rstd, N)
	need("dg", dg, C)
	tasks := chunks(N, C)
	p := thePool
	p.mu.Lock()
	partials = grow(partials, tasks*C)
	theRMSBwd = rmsBwdJob{dx, dg, dy, x, g, rstd, partials, N, C, tasks}
	p.runLocked(tasks, &theRMSBwd)
	for t := 0; t < tasks; t++ {
		pt := partials[t*C : t*C+C]
		for i := range pt {
			dg[i] += pt[i]
		}
	}
	theRMSBwd = rmsBwdJob{}
	p.mu.Unlock()
}

// partials is scratch for per-task reductions (guarded by the pool lock).
var partials []float32

type rmsBwdJob struct {
	dx, dg, dy, x, g, rstd, part []float32
	N, C, t                      int
}

var theRMSBwd rmsBwdJob

func (j *rmsBwdJob) run(t, _ int) {
	lo, hi := span(t, j.t, j.N)
	C := j.C
	g := j.g[:C]
	part := j.part[t*C : t*C+C]
	clear(part)
	ops := curRMS()
	for n := lo; n < hi; n++ {
		x := j.x[n*C : n*C+C]
		dy := j.dy[n*C : n*C+C]
		dx := j.dx[n*C : n*C+C]
		r := j.rstd[n]
		if ops != nil {
			dot := ops.bwdDot(&part[0], &x[0], &dy[0], &g[0], C, r)
			ops.bwdDx(&dx[0], &x[0], &dy[0], &g[0], C, r, r*r*r*dot/float32(C))
			continue
		}
		var dot float32
		for i, v := range x {
			dot += g[i] * dy[i] * v
			part[i] += dy[i] * v * r
		}
		k := r * r * r * dot / float32(C)
		for i, v := range x {
			dx[i] += r*g[i]*dy[i] - k*v
		}
	}
}

// --------------------------------------------------------------- quick-GELU

// QuickGELUForward computes y = x·σ(1.702x) element-wise (y may alias x).
func QuickGELUForward(y, x []float32) {
	need("y", y, len(x))
	n := len(x)
	do(&theGelu, geluJob{y, nil, x, nil, n, chunks(n, 1)}, chunks(n, 1))
}

// QuickGELUForwardBF16 is QuickGELUForward with y rounded to bf16 (y16,
// bit for bit ToBF16 of QuickGELUForward's y); no fp32 y is written.
func QuickGELUForwardBF16(y16 []uint16, x []float32) {
	if len(y16) < len(x) {
		panic(fmt.Sprintf("kernels: len(y16) = %d < %d", len(y16), len(x)))
	}
	n := len(x)
	do(&theGelu, geluJob{nil, y16, x, nil, n, chunks(n, 1)}, chunks(n, 1))
}

// QuickGELUBackwardBF16 is QuickGELUBackward with dx rounded to bf16
// (dx16, bit for bit ToBF16 of QuickGELUBackward's dx); no fp32 dx is
// written.
func QuickGELUBackwardBF16(dx16 []uint16, x, dy []float32) {
	if len(dx16) < len(x) {
		panic(fmt.Sprintf("kernels: len(dx16) = %d < %d", len(dx16), len(x)))
	}
	need("dy", dy, len(x))
	n := len(x)
	do(&theGelu, geluJob{nil, dx16, x, dy, n, chunks(n, 1)}, chunks(n, 1))
}

// QuickGELUBackward computes dx = dy · d/dx[x·σ(1.702x)] element-wise,
// overwriting dx (which may alias dy).
func QuickGELUBackward(dx, x, dy []float32) {
	need("dx", dx, len(x))
	need("dy", dy, len(x))
	n := len(x)
	do(&theGelu, geluJob{dx, nil, x, dy, n, chunks(n, 1)}, chunks(n, 1))
}

type geluJob struct {
	out   []float32
	out16 []uint16 // instead of out (the BF16 variants)
	x, dy []float32
	n, t  int
}

var theGelu geluJob

func (j *geluJob) run(t, w int) {
	lo, hi := span(t, j.t, j.n)
	lo, hi = lo&^15, hi&^15 // keep chunks vector-aligned
	if t == j.t-1 {
		hi = j.n
	}
	if lo >= hi {
		return
	}
	if j.out16 == nil {
		j.gelu(j.out[lo:hi], lo, hi)
		return
	}
	// through a tile of the worker's scratch, then rounded
	tile := thePool.workers[w].ws.tile[:]
	for b := lo; b < hi; b += len(tile) {
		e := min(b+len(tile), hi)
		j.gelu(tile[:e-b], b, e)
		toBF16Seq(j.out16[b:e], tile[:e-b])
	}
}

// gelu writes elements lo..hi of the forward or backward result to out.
func (j *geluJob) gelu(out []float32, lo, hi int) {
	if j.dy == nil {
		geluFwd(out, j.x[lo:hi])
	} else {
		geluBwd(out, j.x[lo:hi], j.dy[lo:hi])
	}
}

// ----------------------------------------------------- softmax cross-entropy

// SoftmaxCrossEntropy computes the mean cross-entropy (nats) of
// softmax(logits[n, :]) against targets[n] over the rows whose target is
// not negative (negative targets are ignored: BERT's unmasked positions),
// and returns it with the number of rows counted.
//
//	logits [N, V], targets [N], dlogits [N, V]
//
// If dlogits is not nil it receives the gradient of that mean:
// (softmax − onehot)/count on counted rows, zero on ignored ones. dlogits
// may alias logits.
func SoftmaxCrossEntropy(dlogits, logits []float32, targets []int32, V int) (loss float64, count int) {
	N := len(targets)
	need("logits", logits, N*V)
	if dlogits != nil {
		need("dlogits", dlogits, N*V)
	}
	for _, t := range targets {
		if int(t) >= V {
			panic(fmt.Sprintf("kernels.SoftmaxCrossEntropy: target %d >= V = %d", t, V))
		}
		if t >= 0 {
			count++
		}
	}
	if count == 0 {
		if dlogits != nil {
			clear(dlogits[:N*V])
		}
		return 0, 0
	}
	tasks := chunks(N, V)
	p := thePool
	p.mu.Lock()
	lossParts = growf64(lossParts, tasks)
	theCE = ceJob{dlogits, logits, targets, lossParts, V, tasks, float32(1 / float64(count))}
	p.runLocked(tasks, &theCE)
	for _, l := range lossParts[:tasks] {
		loss += l
	}
	theCE = ceJob{}
	p.mu.Unlock()
	return loss / float64(count), count
}

var lossParts []float64

func growf64(s []float64, n int) []float64 {
	if cap(s) < n {
		return make([]float64, n)
	}
	return s[:n]
}

type ceJob struct {
	dlogits, logits []float32
	targets         []int32
	part            []float64
	V, t            int
	inv             float32
}

var theCE ceJob

func (j *ceJob) run(t, w int) {
	N := len(j.targets)
	lo, hi := span(t, j.t, N)
	V := j.V
	var loss float64
	var tmp []float32 // the loss alone: exps of a copy, the logits kept
	if j.dlogits == nil {
		ws := &thePool.workers[w].ws
		ws.row = grow(ws.row, V)
		tmp = ws.row
	}
	for n := lo; n < hi; n++ {
		tg := int(j.targets[n])
		row := j.logits[n*V : n*V+V]
		if tg < 0 {
			if j.dlogits != nil {
				clear(j.dlogits[n*V : n*V+V])
			}
			continue
		}
		m := maxf(row)
		xt := row[tg]
		if j.dlogits == nil {
			copy(tmp, row)
			s := expSubSum(tmp, m)
			loss += float64(m) + math.Log(float64(s)) - float64(xt)
			continue
		}
		d := j.dlogits[n*V : n*V+V]
		copy(d, row) // no-op when aliased
		s := expSubSum(d, m)
		loss += float64(m) + math.Log(float64(s)) - float64(xt)
		k := j.inv / s
		for i := range d {
			d[i] *= k
		}
		d[tg] -= j.inv
	}
	j.part[t] = loss
}

// ------------------------------------------------------------------- AdamW

// AdamW applies one Adam step with decoupled weight decay to params, in
// place, with the moment buffers m and v (zero at step 1):
//
//	m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//	p -= lr · ( m/(1−β1^t) / (sqrt(v/(1−β2^t)) + eps) + wd·p )
//
// step t counts from 1.
func AdamW(params, grads, m, v []float32, step int, lr, beta1, beta2, eps, weightDecay float32) {
	n := len(params)
	need("grads", grads, n)
	need("m", m, n)
	need("v", v, n)
	if step < 1 {
		panic("kernels.AdamW: step counts from 1")
	}
	bc1 := 1 - math.Pow(float64(beta1), float64(step))
	bc2 := 1 - math.Pow(float64(beta2), float64(step))
	tasks := chunks(n, 4)
	do(&theAdam, adamJob{params, grads, m, v,
		adamConsts{beta1, 1 - beta1, beta2, 1 - beta2, float32(1 / bc1), float32(1 / bc2), eps, weightDecay, lr}, tasks}, tasks)
}

// adamConsts are one AdamW step's constants, in the order vecOps.adam
// reads them.
type adamConsts [9]float32

const (
	adB1, adOneMinusB1, adB2, adOneMinusB2 = 0, 1, 2, 3
	adC1, adC2, adEps, adWD, adLR          = 4, 5, 6, 7, 8 // c1 = 1/(1−β1^t), c2 = 1/(1−β2^t)
)

type adamJob struct {
	p, g, m, v []float32
	// c is a field of the job, not a local, so that passing it to the
	// vector loop through a function value does not move it to the heap
	// each step.
	c adamConsts
	t int
}

var theAdam adamJob

func (j *adamJob) run(t, _ int) {
	lo, hi := span(t, j.t, len(j.p))
	p, g, m, v := j.p[lo:hi], j.g[lo:hi], j.m[lo:hi], j.v[lo:hi]
	g, m, v = g[:len(p)], m[:len(p)], v[:len(p)]
	c := &j.c
	if ops := cur.vec; ops != nil && ops.adam != nil && len(p) > 0 {
		ops.adam(&p[0], &g[0], &m[0], &v[0], len(p), (*[9]float32)(c))
		return
	}
	for i := range p {
		gi := g[i]
		mi := c[adB1]*m[i] + c[adOneMinusB1]*gi
		vi := c[adB2]*v[i] + c[adOneMinusB2]*gi*gi
		m[i], v[i] = mi, vi
		den := float32(math.Sqrt(float64(vi*c[adC2]))) + c[adEps]
		p[i] -= c[adLR] * (mi*c[adC1]/den + c[adWD]*p[i])
	}
}

// ------------------------------------------------------ gradient-norm clip

// GradNormClip returns the global L2 norm of all the gradient slices
// (accumulated in float64) and, if maxNorm > 0 and the norm exceeds it,
// scales every gradient by maxNorm/norm.
func GradNormClip(grads [][]float32, maxNorm float64) float64 {
	p := thePool
	p.mu.Lock()
	defer p.mu.Unlock()
	var ss float64
	for _, g := range grads {
		tasks := chunks(len(g), 1)
		lossParts = growf64(lossParts, tasks)
		theNorm = normJob{g, lossParts, 0, tasks}
		p.runLocked(tasks, &theNorm)
		for _, s := range lossParts[:tasks] {
			ss += s
		}
	}
	norm := math.Sqrt(ss)
	if maxNorm > 0 && norm > maxNorm {
		k := float32(maxNorm / norm)
		for _, g := range grads {
			tasks := chunks(len(g), 1)
			theNorm = normJob{g, nil, k, tasks}
			p.runLocked(tasks, &theNorm)
		}
	}
	theNorm = normJob{}
	return norm
}

type normJob struct {
	g     []float32
	part  []float64
	scale float32
	t     int
}

var theNorm normJob

func (j *normJob) run(t, _ int) {
	lo, hi := span(t, j.t, len(j.g))
	g := j.g[lo:hi]
	if j.part == nil {
		for i := range g {
			g[i] *= j.scale
		}
		return
	}
	// four float64 lanes: accurate and not latency-bound
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(g); i += 4 {
		a, b, c, d := float64(g[i]), float64(g[i+1]), float64(g[i+2]), float64(g[i+3])
		s0 += a * a
		s1 += b * b
		s2 += c * c
		s3 += d * d
	}
	for ; i < len(g); i++ {
		s0 += float64(g[i]) * float64(g[i])
	}
	j.part[t] = s0 + s1 + s2 + s3
}
