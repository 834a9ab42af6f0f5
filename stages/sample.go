package stages

import (
	"bytes"
	"context"
	"fmt"
	"image"
	_ "image/jpeg" // user pictures may be JPEG
	"io"
	"time"

	"github.com/igpt/igpt/internal/imgproc"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/pipelines"
)

func init() { Register(sampleStage{}) }

// Files of the sample stage.
const (
	SamplesPNG     = "samples.png"
	CompletionsPNG = "completions.png"
	SamplesFile    = "samples.msgpack"
)

// sampleStage draws unconditional samples and half-image completions of
// test images from the trained model, as PNG grids and Tokens records.
type sampleStage struct{}

func (sampleStage) Name() string { return "sample" }
func (sampleStage) Version() int { return 1 }
func (sampleStage) Upstream(cfg *Config) []string {
	return []string{cfg.DecoderStage(), cfg.TokensStage(), "train"}
}
func (sampleStage) Params(cfg *Config) any { return cfg.Sample }

// SampleParams configures the sample stage's PNG grids.
type SampleParams struct {
	// Unconditional samples to draw (default 16).
	Unconditional int `yaml:"unconditional" json:"unconditional"`
	// Images of the test split to complete (default 8), Completions of
	// each (default 4), keeping the top Keep fraction of rows (default 0.5).
	Images      int     `yaml:"images" json:"images"`
	Completions int     `yaml:"completions" json:"completions"`
	Keep        float64 `yaml:"keep" json:"keep"`
	// Temperature (default 1), TopK and TopP (0: off) shape the draws.
	Temperature float64 `yaml:"temperature" json:"temperature"`
	TopK        int     `yaml:"top_k" json:"top_k,omitempty"`
	TopP        float64 `yaml:"top_p" json:"top_p,omitempty"`
	Seed        uint64  `yaml:"seed" json:"seed"`
	// Scale magnifies pixels in the PNGs (default 4).
	Scale int `yaml:"scale" json:"scale"`
}

func (s *SampleParams) fillDefaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&s.Unconditional, 16)
	def(&s.Images, 8)
	def(&s.Completions, 4)
	def(&s.Scale, 4)
	if s.Keep == 0 {
		s.Keep = 0.5
	}
	if s.Temperature == 0 {
		s.Temperature = 1
	}
}

// Run is a Beam-free local stage.
func (sampleStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	sc := rc.Config.Sample
	qm := rc.Inputs[rc.Config.TokensStage()]
	run, err := openRun(ctx, rc.Inputs["train"], qm, rc.Inputs[rc.Config.DecoderStage()])
	if err != nil {
		return nil, err
	}
	m, codec, h, w := run.m, run.codec, run.h, run.w
	opt := model.SampleOptions{Temperature: sc.Temperature, TopK: sc.TopK, TopP: sc.TopP, Seed: sc.Seed}
	out := &Output{Meta: map[string]any{}}
	var recs []records.Tokens

	if n := sc.Unconditional; n > 0 {
		if err := checkSampleMemory(m.Config, fmt.Sprintf("sample.unconditional %d", n), "lower sample.unconditional or sample.scale",
			n, n, h*codec.Factor(), w*codec.Factor(), sc.Scale); err != nil {
			return nil, err
		}
		start := time.Now()
		toks, err := m.Sample(nil, n, m.Config.Seq, opt)
		if err != nil {
			return nil, err
		}
		el := time.Since(start).Seconds()
		out.Meta["unconditional_tokens_per_s"] = float64(n*m.Config.Seq) / el
		var rows [][][]uint16
		for b := 0; b < n; b++ {
			t := toU16(toks[b*m.Config.Seq : (b+1)*m.Config.Seq])
			rows = append(rows, [][]uint16{t})
			recs = append(recs, records.Tokens{Key: fmt.Sprintf("sample/%04d", b), Label: -1, H: h, W: w, Vocab: codec.Vocab(), Tok: t})
		}
		png, err := tokenImageGrid(regroup(rows, 8), h, w, codec, sc.Scale, 0)
		if err != nil {
			return nil, err
		}
		if err := storage.WriteFile(ctx, storage.Join(rc.Dir, SamplesPNG), png); err != nil {
			return nil, err
		}
		out.Files = append(out.Files, FileInfo{Name: SamplesPNG, Bytes: int64(len(png))})
	}
	if sc.Images > 0 && sc.Completions > 0 {
		var test []records.Tokens
		for _, f := range qm.Split("test") {
			err := pipelines.ScanShard(ctx, qm.Path(f.Name), func(t records.Tokens) error {
				if len(test) >= sc.Images {
					return io.EOF
				}
				test = append(test, t)
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		grid, comp, err := Complete(m, test, sc.Completions, sc.Keep, opt, codec, sc.Scale)
		if err != nil {
			return nil, err
		}
		for i, c := range comp {
			recs = append(recs, records.Tokens{Key: fmt.Sprintf("completion/%s/%d", test[i/sc.Completions].Key, i%sc.Completions),
				Label: test[i/sc.Completions].Label, H: h, W: w, Vocab: codec.Vocab(), Tok: c})
		}
		if err := storage.WriteFile(ctx, storage.Join(rc.Dir, CompletionsPNG), grid); err != nil {
			return nil, err
		}
		out.Files = append(out.Files, FileInfo{Name: CompletionsPNG, Bytes: int64(len(grid))})
	}
	st, err := pipelines.WriteTokens(ctx, rc.Dir, SamplesFile, recs)
	if err != nil {
		return nil, err
	}
	out.Files = append(out.Files, FileInfo{Name: SamplesFile, Split: "samples", Kind: "Tokens", Records: st.Records, Bytes: st.Bytes})
	return out, nil
}

func toU16(x []int32) []uint16 {
	out := make([]uint16, len(x))
	for i, v := range x {
		out[i] = uint16(v)
	}
	return out
}

func regroup(items [][][]uint16, perRow int) [][][]uint16 {
	var rows [][][]uint16
	for i := 0; i < len(items); i += perRow {
		var row [][]uint16
		for _, it := range items[i:min(i+perRow, len(items))] {
			row = append(row, it...)
		}
		rows = append(rows, row)
	}
	return rows
}

// Complete keeps the top keep fraction of each image's token rows and
// samples the rest n times, returning the grid (per row: the occluded
// input, the n completions, the original, decoded by codec) and the
// completions in order.
func Complete(m *model.Model, imgs []records.Tokens, n int, keep float64, opt model.SampleOptions, codec Codec, scale int) ([]byte, [][]uint16, error) {
	if len(imgs) == 0 {
		return nil, nil, fmt.Errorf("sample: no images to complete")
	}
	if err := CheckScale(scale); err != nil {
		return nil, nil, err
	}
	if !(keep > 0 && keep < 1) {
		return nil, nil, fmt.Errorf("sample: keep %v is not a fraction in (0, 1) of the rows to keep (sample.keep, --keep)", keep)
	}
	h, w := imgs[0].H, imgs[0].W
	T := m.Config.Seq
	if h*w != T {
		return nil, nil, fmt.Errorf("sample: images of %d×%d tokens, the model's context is %d", h, w, T)
	}
	if err := CheckGrid(imgs, h, w, codec.Vocab()); err != nil {
		return nil, nil, fmt.Errorf("sample: %w", err)
	}
	if err := checkSampleMemory(m.Config, fmt.Sprintf("%d completions of %d images (sample.completions × sample.images, or --n)", n, len(imgs)),
		"lower sample.completions or sample.images (--n for igpt sample --complete)", len(imgs)*n, len(imgs)*(n+2), h*codec.Factor(), w*codec.Factor(), scale); err != nil {
		return nil, nil, err
	}
	P := int(float64(h)*keep) * w
	prefix := make([]int32, 0, len(imgs)*n*P)
	for _, img := range imgs {
		for c := 0; c < n; c++ {
			for _, v := range img.Tok[:P] {
				prefix = append(prefix, int32(v))
			}
		}
	}
	toks, err := m.Sample(prefix, len(imgs)*n, T, opt)
	if err != nil {
		return nil, nil, err
	}
	var rows [][][]uint16
	var comps [][]uint16
	for i, img := range imgs {
		row := [][]uint16{img.Tok[:P]}
		for c := 0; c < n; c++ {
			t := toU16(toks[(i*n+c)*T : (i*n+c+1)*T])
			row = append(row, t)
			comps = append(comps, t)
		}
		rows = append(rows, append(row, img.Tok))
	}
	png, err := tokenImageGrid(rows, h, w, codec, scale, 1)
	return png, comps, err
}

// tokenImageGrid draws rows of h×w token grids decoded by codec; a
// sequence shorter than h×w (an occluded input) is drawn with its missing
// pixels grey. When sep > 0 a wider gap follows the first column and
// precedes the last.
func tokenImageGrid(rows [][][]uint16, h, w int, codec Codec, scale, sep int) ([]byte, error) {
	tiles := make([][]imgproc.Tile, len(rows))
	for r, row := range rows {
		for _, toks := range row {
			rgb, err := codec.Decode(toks, h, w)
			if err != nil {
				return nil, fmt.Errorf("sample: decode: %w", err)
			}
			tiles[r] = append(tiles[r], imgproc.Tile{RGB: rgb})
		}
	}
	f := codec.Factor()
	return imgproc.Grid{TileH: h * f, TileW: w * f, Scale: scale, Gap: 4, Sep: sep > 0}.PNG(tiles)
}

// TokenRGB decodes tokens to RGB pixels with the palette.
func TokenRGB(pal *records.Palette, toks []uint16) []byte {
	out := make([]byte, 0, 3*len(toks))
	for _, t := range toks {
		c := pal.Colour(t)
		out = append(out, c[0], c[1], c[2])
	}
	return out
}

// CompletePicture completes the user's own picture: decoded (PNG or JPEG),
// centre-cropped to the token grid's aspect, resized with an area filter to
// the grid's pixels and encoded by the run's codec (palette or VQ-VAE),
// then completed n times.
func CompletePicture(ctx context.Context, runDir string, picture []byte, n int, keep float64, opt model.SampleOptions, scale int) ([]byte, error) {
	run, err := loadRun(ctx, runDir)
	if err != nil {
		return nil, err
	}
	tok, err := run.encodePicture(picture)
	if err != nil {
		return nil, err
	}
	png, _, err := Complete(run.m, []records.Tokens{tok}, n, keep, opt, run.codec, scale)
	return png, err
}

// encodePicture decodes a PNG or JPEG picture (its header's size checked
// against MaxPicturePixels first), centre-crops it to the token grid's
// aspect, resizes it with an area filter to the grid's pixels and encodes
// it with the run's codec.
func (r *trainedRun) encodePicture(picture []byte) (records.Tokens, error) {
	// The header's size first: a small file can claim 100000×100000.
	cfg, format, err := image.DecodeConfig(bytes.NewReader(picture))
	if err != nil {
		return records.Tokens{}, fmt.Errorf("sample: the picture is not a readable PNG or JPEG: %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > MaxPicturePixels {
		return records.Tokens{}, fmt.Errorf("sample: the picture's %s header claims %d×%d pixels; at most %d pixels are read: shrink it first", format, cfg.Width, cfg.Height, MaxPicturePixels)
	}
	src, _, err := image.Decode(bytes.NewReader(picture))
	if err != nil {
		return records.Tokens{}, fmt.Errorf("sample: the picture is not a readable PNG or JPEG: %w", err)
	}
	f := r.codec.Factor()
	ph, pw := r.h*f, r.w*f
	pix, hh, ww := cropRGB(src, ph, pw)
	small, err := imgproc.Resize(pix, hh, ww, 3, ph, pw)
	if err != nil {
		return records.Tokens{}, err
	}
	tok, err := r.codec.Encode(records.Image{Key: "picture", H: ph, W: pw, C: 3, Pix: small})
	if err != nil {
		return records.Tokens{}, fmt.Errorf("sample: encode the picture: %w", err)
	}
	return tok, nil
}

// MaxPicturePixels caps the picture sample --complete decodes (8192×8192).
const MaxPicturePixels = 1 << 26

// CheckScale refuses a pixel magnification that draws nothing or more than
// memory holds.
func CheckScale(scale int) error {
	if scale < 1 || scale > MaxScale {
		return fmt.Errorf("scale %d is outside 1..%d (--scale, sample.scale): each token becomes scale×scale pixels", scale, MaxScale)
	}
	return nil
}

// CheckGrid checks that records drawn in one grid all have h×w tokens,
// each below the vocabulary k (palette colours or VQ codes), naming the
// first that does not.
func CheckGrid(recs []records.Tokens, h, w, k int) error {
	for i, r := range recs {
		if r.H != h || r.W != w || len(r.Tok) != h*w {
			return fmt.Errorf("record %d (%q) is %d×%d tokens, the first is %d×%d: a grid needs one size (resize them alike with quantize.resize)", i, r.Key, r.H, r.W, h, w)
		}
		for j, t := range r.Tok {
			if int(t) >= k {
				return fmt.Errorf("record %d (%q): token %d at position %d is outside the vocabulary of %d (palette colours or VQ codes)", i, r.Key, t, j, k)
			}
		}
	}
	return nil
}

// trainedRun is a train stage's final model with the codec and token
// grid of the tokens it was trained on.
type trainedRun struct {
	m     *model.Model
	codec Codec
	h, w  int
}

// loadRun opens a train folder: its final model, and the codec and grid
// of its token input, found through its manifest's inputs.
func loadRun(ctx context.Context, runDir string) (*trainedRun, error) {
	tm, err := ReadManifest(ctx, runDir)
	if err != nil {
		return nil, fmt.Errorf("sample: %s is not a finished train folder: %w", runDir, err)
	}
	if tm.Stage != "train" {
		return nil, fmt.Errorf("sample: %s is a %s stage folder; give a train stage folder (<root>/train/<key>; igpt status CONFIG lists its key)", runDir, tm.Stage)
	}
	qm, err := tokensInput(ctx, tm)
	if err != nil {
		return nil, err
	}
	codec, err := OpenCodec(ctx, qm)
	if err != nil {
		return nil, err
	}
	return openRunCodec(ctx, tm, qm, codec)
}

// openRun loads the model of train output tm, the token grid of its token
// input qm and the codec of decoder output dm (palette or vqvae-train).
func openRun(ctx context.Context, tm, qm, dm *Manifest) (*trainedRun, error) {
	codec, err := codecOf(ctx, dm)
	if err != nil {
		return nil, err
	}
	return openRunCodec(ctx, tm, qm, codec)
}

func openRunCodec(ctx context.Context, tm, qm *Manifest, codec Codec) (*trainedRun, error) {
	p, _, err := LoadTrained(ctx, tm)
	if err != nil {
		return nil, err
	}
	h, w, err := TokensGrid(ctx, qm)
	if err != nil {
		return nil, err
	}
	if h*w != p.Config.Seq {
		return nil, fmt.Errorf("sample: %s's tokens are %d×%d, the model's context is %d", qm.Dir, h, w, p.Config.Seq)
	}
	if p.Config.Vocab != codec.Vocab() {
		return nil, fmt.Errorf("sample: the model in %s has a vocabulary of %d tokens, but the %s tokens in %s have %d: it was trained on other tokens",
			tm.Dir, p.Config.Vocab, qm.Stage, qm.Dir, codec.Vocab())
	}
	return &trainedRun{m: model.FromParams(p), codec: codec, h: h, w: w}, nil
}

// cropRGB centre-crops an image to the aspect ratio h:w and returns its
// RGB bytes and size.
func cropRGB(src image.Image, h, w int) ([]byte, int, int) {
	b := src.Bounds()
	ch, cw := b.Dy(), b.Dy()*w/h
	if cw > b.Dx() {
		cw, ch = b.Dx(), max(1, b.Dx()*h/w)
	}
	cw = max(cw, 1)
	x0, y0 := b.Min.X+(b.Dx()-cw)/2, b.Min.Y+(b.Dy()-ch)/2
	pix := make([]byte, 0, cw*ch*3)
	for y := y0; y < y0+ch; y++ {
		for x := x0; x < x0+cw; x++ {
			r, g, bb, _ := src.At(x, y).RGBA()
			pix = append(pix, uint8(r>>8), uint8(g>>8), uint8(bb>>8))
		}
	}
	return pix, ch, cw
}

// SampleGrid draws n unconditional samples from a train folder's model.
func SampleGrid(ctx context.Context, runDir string, n int, opt model.SampleOptions, scale int) ([]byte, error) {
	if err := CheckScale(scale); err != nil {
		return nil, err
	}
	run, err := loadRun(ctx, runDir)
	if err != nil {
		return nil, err
	}
	m := run.m
	if err := checkSampleMemory(m.Config, fmt.Sprintf("--n %d samples", n), "lower --n or --scale", n, n, run.h*run.codec.Factor(), run.w*run.codec.Factor(), scale); err != nil {
		return nil, err
	}
	toks, err := m.Sample(nil, n, m.Config.Seq, opt)
	if err != nil {
		return nil, err
	}
	var items [][][]uint16
	for b := 0; b < n; b++ {
		items = append(items, [][]uint16{toU16(toks[b*m.Config.Seq : (b+1)*m.Config.Seq])})
	}
	return tokenImageGrid(regroup(items, 8), run.h, run.w, run.codec, scale, 0)
}
