package vqvae

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/igpt/igpt/internal/kernels"
)

// Param is one trained tensor with its gradient.
type Param struct {
	Name  string
	Shape []int
	W, G  []float32
}

// Model is a VQ-VAE: the encoder's and decoder's parameters (trained by
// gradients), the codebook and its EMA state (trained by moving averages).
type Model struct {
	Cfg    Config
	Params []*Param // in graph order

	Codebook []float32 // [K, D]
	EMACount []float32 // [K]    biased EMA of the code counts (Sonnet's "hidden")
	EMASum   []float32 // [K, D] biased EMA of the sums of the assigned z_e
	Unused   []int32   // [K]    updates since the code was last chosen
	Updates  int       // EMA updates so far (debiasing: 1 − decay^Updates)

	byName map[string]*Param
	graphs map[[3]int]*graph
	last   *graph // graph of the last Forward (for Backward and UpdateCodebook)
}

// New returns a model with PyTorch's default initialisation of every
// convolution (weight and bias uniform in ±1/sqrt(fan_in)) and a standard
// normal codebook (Sonnet's), drawn from seed.
func New(cfg Config, seed uint64) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Model{Cfg: cfg, byName: map[string]*Param{}, graphs: map[[3]int]*graph{}}
	m.build(1, cfg.Factor, cfg.Factor, true) // declares the parameters
	r := rand.New(rand.NewPCG(seed, 0x7671766165))
	for _, p := range m.Params {
		w := p // a bias takes its weight's fan-in
		if len(p.Shape) == 1 {
			w = m.byName[p.Name[:len(p.Name)-len("bias")]+"weight"]
		}
		bound := 1 / math.Sqrt(float64(w.fanIn()))
		for i := range p.W {
			p.W[i] = float32((2*r.Float64() - 1) * bound)
		}
	}
	K, D := cfg.K, cfg.D
	m.Codebook = make([]float32, K*D)
	for i := range m.Codebook {
		m.Codebook[i] = float32(r.NormFloat64())
	}
	m.EMACount = make([]float32, K)
	m.EMASum = make([]float32, K*D)
	m.Unused = make([]int32, K)
	return m, nil
}

// fanIn is PyTorch's fan-in of a weight: for a convolution [KH,KW,C,OC]
// KH·KW·C; for a transposed one [KH,KW,OC,C] PyTorch's weight is
// [C_in=C, C_out=OC, KH, KW] and its fan-in (dimension 1) is KH·KW·OC.
func (p *Param) fanIn() int { return p.Shape[0] * p.Shape[1] * p.Shape[2] }

// op is one step of the forward pass over activation slots.
type op struct {
	kind    int // opConv, opConvT, opReLU, opAdd
	g       kernels.ConvGeom
	w, b    *Param
	in, in2 int // input slot(s)
	out     int // output slot
}

const (
	opConv = iota
	opConvT
	opReLU
	opAdd
)

// graph holds the ops and the activations of one batch shape.
type graph struct {
	n, h, w      int // images and their size
	hq, wq       int // code grid
	enc, dec     []op
	acts, grads  [][]float32
	shapes       [][4]int // [N, H, W, C] of every slot
	written      []bool   // backward: slot gradient holds a value
	col          []float32
	x, ze, zq, y int // slots: input, encoder output, quantized, reconstruction

	dots  []float32 // [M, K]  z_e·eᵀ
	enorm []float32 // [K]     ‖e_k‖²
	codes []int32   // [M]
	sums  []float32 // [K, D]  Σ z_e per code (EMA update)
	count []float32 // [K]
}

type builder struct {
	m       *Model
	g       *graph
	declare bool
}

func (b *builder) slot(n, h, w, c int) int {
	b.g.shapes = append(b.g.shapes, [4]int{n, h, w, c})
	b.g.acts = append(b.g.acts, make([]float32, n*h*w*c))
	b.g.grads = append(b.g.grads, make([]float32, n*h*w*c))
	return len(b.g.acts) - 1
}

func (b *builder) param(name string, shape ...int) *Param {
	if b.declare {
		n := 1
		for _, s := range shape {
			n *= s
		}
		p := &Param{Name: name, Shape: shape, W: make([]float32, n), G: make([]float32, n)}
		b.m.Params = append(b.m.Params, p)
		b.m.byName[name] = p
		return p
	}
	return b.m.byName[name]
}

// conv appends a convolution k×k with the given stride and padding to cout
// channels (transposed: the adjoint of one, going up by the stride).
func (b *builder) conv(name string, in, k, stride, pad, cout int, transposed bool) int {
	s := b.g.shapes[in]
	o := op{kind: opConv, in: in}
	if transposed {
		// output [N, (H−1)s − 2p + k, …, cout] is the input of the conv it mirrors
		H, W := (s[1]-1)*stride-2*pad+k, (s[2]-1)*stride-2*pad+k
		o.kind = opConvT
		o.g = kernels.ConvGeom{N: s[0], H: H, W: W, C: cout, OC: s[3], KH: k, KW: k, Stride: stride, Pad: pad}
		o.w = b.param(name+".weight", k, k, cout, s[3])
		o.b = b.param(name+".bias", cout)
		o.out = b.slot(s[0], H, W, cout)
	} else {
		o.g = kernels.ConvGeom{N: s[0], H: s[1], W: s[2], C: s[3], OC: cout, KH: k, KW: k, Stride: stride, Pad: pad}
		oh, ow := o.g.Out()
		o.w = b.param(name+".weight", k, k, s[3], cout)
		o.b = b.param(name+".bias", cout)
		o.out = b.slot(s[0], oh, ow, cout)
	}
	if n := o.g.ColLen(); n > len(b.g.col) {
		b.g.col = make([]float32, n)
	}
	b.add(o)
	return o.out
}

func (b *builder) relu(in int) int {
	s := b.g.shapes[in]
	out := b.slot(s[0], s[1], s[2], s[3])
	b.add(op{kind: opReLU, in: in, out: out})
	return out
}

func (b *builder) sum(x, y int) int {
	s := b.g.shapes[x]
	out := b.slot(s[0], s[1], s[2], s[3])
	b.add(op{kind: opAdd, in: x, in2: y, out: out})
	return out
}

// add appends to the encoder until z_e exists, then to the decoder.
func (b *builder) add(o op) {
	if b.g.ze < 0 {
		b.g.enc = append(b.g.enc, o)
	} else {
		b.g.dec = append(b.g.dec, o)
	}
}

// residual appends R residual blocks and the final ReLU.
func (b *builder) residual(prefix string, h int) int {
	c := b.m.Cfg
	for r := 0; r < c.ResBlocks; r++ {
		p := fmt.Sprintf("%s.res.%d", prefix, r)
		t := b.relu(h)
		t = b.conv(p+".conv3", t, 3, 1, 1, c.ResHidden, false)
		t = b.relu(t)
		t = b.conv(p+".conv1", t, 1, 1, 0, c.Hidden, false)
		h = b.sum(h, t)
	}
	return b.relu(h)
}

// build returns the graph for n images of h×w (cached), declaring the
// parameters on the first call.
func (m *Model) build(n, h, w int, declare bool) *graph {
	key := [3]int{n, h, w}
	if g := m.graphs[key]; g != nil {
		return g
	}
	c := m.Cfg
	g := &graph{n: n, h: h, w: w, ze: -1}
	b := &builder{m: m, g: g, declare: declare}
	// encoder: x[N,h,w,3] → z_e[N,h/f,w/f,D]
	g.x = b.slot(n, h, w, 3)
	t := g.x
	L := c.Levels()
	for i := 0; i < L; i++ {
		ch := c.Hidden / 2
		if i == L-1 {
			ch = c.Hidden
		}
		t = b.conv(fmt.Sprintf("encoder.down.%d", i), t, 4, 2, 1, ch, false)
		t = b.relu(t)
	}
	t = b.conv("encoder.conv", t, 3, 1, 1, c.Hidden, false)
	t = b.residual("encoder", t)
	ze := b.conv("encoder.pre_vq", t, 1, 1, 0, c.D, false)
	s := g.shapes[ze]
	g.hq, g.wq = s[1], s[2]
	// decoder: z_q[N,h/f,w/f,D] → y[N,h,w,3]
	g.ze = ze
	g.zq = b.slot(n, g.hq, g.wq, c.D)
	t = b.conv("decoder.conv", g.zq, 3, 1, 1, c.Hidden, false)
	t = b.residual("decoder", t)
	for i := 0; i < L; i++ {
		ch := c.Hidden / 2
		if i == L-1 {
			ch = 3
		}
		t = b.conv(fmt.Sprintf("decoder.up.%d", i), t, 4, 2, 1, ch, true)
		if i < L-1 {
			t = b.relu(t)
		}
	}
	g.y = t
	M := n * g.hq * g.wq
	g.dots = make([]float32, M*c.K)
	g.enorm = make([]float32, c.K)
	g.codes = make([]int32, M)
	g.sums = make([]float32, c.K*c.D)
	g.count = make([]float32, c.K)
	g.written = make([]bool, len(g.acts))
	m.graphs[key] = g
	return g
}

// ForgetGraph drops the cached graph (activations and workspace) of n
// images of h×w, if any. Each batch size gets a graph of its own: a caller
// that encodes many partial batches of different sizes (the last batch of
// each input shard) forgets them, or the cache grows with the number of
// sizes seen.
func (m *Model) ForgetGraph(n, h, w int) {
	if g := m.graphs[[3]int{n, h, w}]; g != nil && g != m.last {
		delete(m.graphs, [3]int{n, h, w})
	}
}

// CachedGraphs returns the number of graphs the model holds.
func (m *Model) CachedGraphs() int { return len(m.graphs) }

// run executes ops forward.
func (g *graph) run(ops []op) {
	for i := range ops {
		o := &ops[i]
		x, y := g.acts[o.in], g.acts[o.out]
		switch o.kind {
		case opConv:
			kernels.Conv2DForward(y, x, o.w.W, o.b.W, g.col, o.g)
		case opConvT:
			kernels.ConvTranspose2DForward(y, x, o.w.W, o.b.W, g.col, o.g)
		case opReLU:
			kernels.ReLUForward(y, x)
		case opAdd:
			x2 := g.acts[o.in2]
			for j := range y {
				y[j] = x[j] + x2[j]
			}
		}
	}
}

// back runs ops backward: parameter gradients accumulate into Param.G; a
// slot's gradient is overwritten by its first contribution and accumulated
// by the others (g.written). The input slot's gradient is not computed.
func (g *graph) back(ops []op) {
	for i := len(ops) - 1; i >= 0; i-- {
		o := &ops[i]
		dy := g.grads[o.out]
		if o.kind == opAdd {
			for _, in := range [2]int{o.in, o.in2} {
				d := g.grads[in]
				if g.written[in] {
					for j := range d {
						d[j] += dy[j]
					}
				} else {
					copy(d, dy)
				}
				g.written[in] = true
			}
			continue
		}
		var dx []float32
		acc := g.written[o.in]
		if o.in != g.x {
			dx = g.grads[o.in]
			g.written[o.in] = true
		}
		switch o.kind {
		case opConv:
			kernels.Conv2DBackward(dx, o.w.G, o.b.G, dy, g.acts[o.in], o.w.W, g.col, o.g, acc)
		case opConvT:
			kernels.ConvTranspose2DBackward(dx, o.w.G, o.b.G, dy, g.acts[o.in], o.w.W, g.col, o.g, acc)
		case opReLU:
			kernels.ReLUBackward(dx, g.acts[o.out], dy, acc)
		}
	}
}
