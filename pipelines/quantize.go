package pipelines

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/igpt/igpt/internal/imgproc"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/kmeans"
)

func init() {
	register.DoFn3x1[context.Context, string, func(string, string), error](&QuantizeFn{})
	beam.RegisterType(reflectTypeOf[records.Tokens]())
}

// ShardInput is one Image shard and the split it belongs to.
type ShardInput struct {
	Path  string `json:"path"`
	Split string `json:"split"`
}

// QuantizeConfig is the quantize pipeline's input.
type QuantizeConfig struct {
	Inputs string // a file of ShardInput JSON lines (WriteLines)
	// Palette is the path of the palette file (records.EncodePalette);
	// each worker reads it once in Setup, so the job graph holds its path.
	Palette string
	// Resize, when set, scales every image to [h, w] (area filter) first.
	Resize [2]int
	// ValFraction of the train split goes to a "val" split, chosen by a
	// seeded hash of each key; 0 keeps train whole.
	ValFraction float64
	Seed        uint64         // shuffle and val-carving seed
	Shards      map[string]int // shards per output split (train, val, test, …)
	Dir         string
}

// Quantize maps every pixel of every image to its nearest palette colour
// (a 2^24-entry lookup table built once per worker), carves a val split
// from train if asked, and writes Tokens shards per split. Records are
// spread over shards and ordered within each shard by a seeded hash of
// their key: a deterministic shuffle, through storage (tokenSpill). It
// returns the written shards, a PCollection of ShardStats.
func Quantize(s beam.Scope, cfg QuantizeConfig) (beam.PCollection, error) {
	if cfg.Inputs == "" {
		return beam.PCollection{}, fmt.Errorf("pipelines: quantize: no input shard list")
	}
	if cfg.Palette == "" {
		return beam.PCollection{}, fmt.Errorf("pipelines: quantize: no palette")
	}
	s = s.Scope("quantize")
	tasks := beam.Reshuffle(s.Scope("SpreadShards"), indexed(s.Scope("ListShards"), cfg.Inputs))
	pieces := beam.ParDo(s.Scope("Quantize"), &QuantizeFn{Palette: cfg.Palette, Resize: cfg.Resize, ValFraction: cfg.ValFraction,
		Seed: cfg.Seed, Shards: cfg.Shards, Dir: cfg.Dir}, tasks)
	return writeTokenShards(s, pieces, &WriteTokensShardFn{Dir: cfg.Dir, Shards: cfg.Shards, Seed: cfg.Seed}), nil
}

// QuantizeFn turns the images of one input shard (an IndexedInput) into
// Tokens, spilled to Dir's pieces by output shard; it emits (ShardKey,
// piece path) for each piece.
type QuantizeFn struct {
	Palette     string // path of the palette file
	Resize      [2]int
	ValFraction float64
	Seed        uint64
	Shards      map[string]int
	Dir         string

	lut *kmeans.LUT
	pal *records.Palette
}

// quantizeSlots bounds the input shards a worker process quantizes at
// once, each spilling a shard's tokens.
var quantizeSlots = workSlots{perCore: 1}

// ProcessElement quantizes one input shard.
func (f *QuantizeFn) ProcessElement(ctx context.Context, task string, emit func(string, string)) error {
	if err := quantizeSlots.acquire(ctx); err != nil {
		return err
	}
	defer quantizeSlots.release()
	if f.lut == nil {
		return fmt.Errorf("quantize: no palette loaded (Setup was not run)")
	}
	var ti IndexedInput
	if err := json.Unmarshal([]byte(task), &ti); err != nil {
		return fmt.Errorf("quantize: bad input %q: %w", task, err)
	}
	lut, p := f.lut, f.pal
	spill := newTokenSpill(f.Dir, ti.Index)
	err := records.ScanFile(ctx, ti.Input.Path, func(img records.Image) error {
		tok, err := Tokenize(img, lut, p.K, f.Resize)
		if err != nil {
			return err
		}
		key, err := routeTokens(f.Seed, f.ValFraction, f.Shards, ti.Input.Split, img.Key)
		if err != nil {
			return fmt.Errorf("quantize: %w", err)
		}
		spill.add(key, tok)
		return nil
	})
	if err != nil {
		return err
	}
	if err := spill.flush(ctx, emit); err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	return nil
}

// routeTokens returns the ShardKey of a record: its split (a train record
// goes to "val" when a seeded hash of its key falls under valFraction) and
// a shard chosen by another seeded hash of its key.
func routeTokens(seed uint64, valFraction float64, shards map[string]int, split, key string) (string, error) {
	if split == "train" && InVal(seed, valFraction, key) {
		split = "val"
	}
	n := shards[split]
	if n <= 0 {
		return "", fmt.Errorf("no shard count for split %q", split)
	}
	return ShardKey(split, int(seededHash(seed, "shard", key)%uint64(n))), nil
}

// Setup reads the palette and builds (or reuses) this worker's table.
func (f *QuantizeFn) Setup(ctx context.Context) error {
	data, err := storage.ReadFile(ctx, f.Palette)
	if err != nil {
		return fmt.Errorf("quantize: read the palette: %w", err)
	}
	f.lut, f.pal, err = lutFor(data, f.Palette)
	return err
}

// Tokenize maps an image (resized first when resize is set) to palette
// tokens through lut.
func Tokenize(img records.Image, lut *kmeans.LUT, vocab int, resize [2]int) (records.Tokens, error) {
	pix, h, w := img.Pix, img.H, img.W
	var err error
	if resize[0] > 0 && (resize[0] != h || resize[1] != w) {
		if pix, err = imgproc.Resize(pix, h, w, img.C, resize[0], resize[1]); err != nil {
			return records.Tokens{}, fmt.Errorf("quantize: image %s: %w", img.Key, err)
		}
		h, w = resize[0], resize[1]
	}
	rgb, err := imgproc.ToRGB(pix, img.C)
	if err != nil {
		return records.Tokens{}, fmt.Errorf("quantize: image %s: %w", img.Key, err)
	}
	tok := make([]uint16, h*w)
	if err := lut.Map(rgb, tok); err != nil {
		return records.Tokens{}, fmt.Errorf("quantize: image %s: %w", img.Key, err)
	}
	return records.Tokens{Key: img.Key, Label: img.Label, H: h, W: w, Vocab: vocab, Tok: tok}, nil
}

var (
	lutMu    sync.Mutex
	lutCache = map[[32]byte]*cachedLUT{}
)

type cachedLUT struct {
	lut *kmeans.LUT
	p   *records.Palette
}

// lutFor returns the lookup table of an encoded palette, built once per
// worker process and shared by every DoFn instance.
func lutFor(palette []byte, name string) (*kmeans.LUT, *records.Palette, error) {
	key := sha256.Sum256(palette)
	lutMu.Lock()
	defer lutMu.Unlock()
	if c, ok := lutCache[key]; ok {
		return c.lut, c.p, nil
	}
	p, err := records.DecodePalette(palette, name)
	if err != nil {
		return nil, nil, err
	}
	lut, err := kmeans.NewLUT(p.Centres)
	if err != nil {
		return nil, nil, fmt.Errorf("quantize: build lookup table: %w", err)
	}
	clear(lutCache) // one palette per pipeline: keep memory at one table
	lutCache[key] = &cachedLUT{lut, p}
	return lut, p, nil
}

// ShardKey joins a split and a shard index.
func ShardKey(split string, i int) string { return split + "|" + strconv.Itoa(i) }

func parseShardKey(k string) (string, int, error) {
	i := strings.LastIndexByte(k, '|')
	if i < 0 {
		return "", 0, fmt.Errorf("bad shard key %q", k)
	}
	n, err := strconv.Atoi(k[i+1:])
	return k[:i], n, err
}

// seededHash is FNV-1a over the seed, a purpose tag and a key.
func seededHash(seed uint64, purpose, key string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	h.Write([]byte(purpose))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return mix64(h.Sum64())
}

// mix64 is a bijective finaliser (splitmix64) that spreads FNV's low bits.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// unitHash maps a key to [0, 1) uniformly.
// InVal reports whether the train image key is carved into the val split
// of fraction frac under seed: the one rule of every stage that carves val.
func InVal(seed uint64, frac float64, key string) bool {
	return frac > 0 && unitHash(seed, "val", key) < frac
}

func unitHash(seed uint64, purpose, key string) float64 {
	return float64(seededHash(seed, purpose, key)>>11) / (1 << 53)
}

// WriteTokensShardFn writes one shard's Tokens in seeded-shuffle order.
type WriteTokensShardFn struct {
	Dir    string
	Shards map[string]int
	Seed   uint64
	// Vocab, when set, adds each shard's token histogram (Codes) to its
	// stats: vqvae-encode reports codes used and perplexity from it.
	Vocab int
}

// writeShardSlots bounds the token shards a worker process gathers and
// writes at once, each holding its shard's records.
var writeShardSlots = workSlots{perCore: 1}

// ProcessElement writes one shard from its pieces.
func (f *WriteTokensShardFn) ProcessElement(ctx context.Context, key string, iter func(*string) bool, emit func(string)) error {
	if err := writeShardSlots.acquire(ctx); err != nil {
		return err
	}
	defer writeShardSlots.release()
	split, idx, err := parseShardKey(key)
	if err != nil {
		return err
	}
	var paths []string
	var p string
	for iter(&p) {
		paths = append(paths, p)
	}
	toks, err := readPieces(ctx, paths)
	if err != nil {
		return fmt.Errorf("quantize: shard %s: %w", key, err)
	}
	order := make([]uint64, len(toks))
	for i := range toks {
		order[i] = seededHash(f.Seed, "order", toks[i].Key)
	}
	sort.Sort(byOrder{toks, order})
	st, err := writeShard(ctx, f.Dir, split, idx, f.Shards[split], records.KindTokens, toks, func(x *records.Tokens) int { return x.Label })
	if err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	if f.Vocab > 0 {
		if st.Codes, err = tokenHistogram(toks, f.Vocab); err != nil {
			return fmt.Errorf("quantize: shard %s: %w", st.Name, err)
		}
	}
	emit(shardEvent(st))
	return nil
}

type byOrder struct {
	t []records.Tokens
	o []uint64
}

func (b byOrder) Len() int { return len(b.t) }
func (b byOrder) Less(i, j int) bool {
	if b.o[i] != b.o[j] {
		return b.o[i] < b.o[j]
	}
	return b.t[i].Key < b.t[j].Key
}
func (b byOrder) Swap(i, j int) {
	b.t[i], b.t[j] = b.t[j], b.t[i]
	b.o[i], b.o[j] = b.o[j], b.o[i]
}

// tokenHistogram counts the tokens of toks, each < vocab.
func tokenHistogram(toks []records.Tokens, vocab int) ([]int64, error) {
	h := make([]int64, vocab)
	for i := range toks {
		for _, t := range toks[i].Tok {
			if int(t) >= vocab {
				return nil, fmt.Errorf("record %s: token %d ≥ vocab %d", toks[i].Key, t, vocab)
			}
			h[t]++
		}
	}
	return h, nil
}
