package pipelines

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/kmeans"
)

func TestMain(m *testing.M) { ptest.Main(m) }

// writeRandomShards writes n shards of random small RGB images and returns
// their paths and the colour counts computed directly.
func writeRandomShards(t *testing.T, n, perShard int) ([]string, map[uint32]uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	counts := map[uint32]uint64{}
	var paths []string
	dir := t.TempDir()
	for s := 0; s < n; s++ {
		var imgs []records.Image
		for i := 0; i < perShard; i++ {
			pix := make([]byte, 4*4*3)
			for p := 0; p < 16; p++ {
				// few distinct colours, so counts add up across images
				v := byte(rng.IntN(4) * 60)
				pix[3*p], pix[3*p+1], pix[3*p+2] = v, byte(rng.IntN(3)), 7
				counts[uint32(pix[3*p])<<16|uint32(pix[3*p+1])<<8|7]++
			}
			imgs = append(imgs, records.Image{Key: fmt.Sprintf("k%d-%d", s, i), H: 4, W: 4, C: 3, Pix: pix})
		}
		st, err := writeShard(context.Background(), dir, "train", s, n, records.KindImage, imgs, func(x *records.Image) int { return x.Label })
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, filepath.Join(dir, st.Name))
	}
	return paths, counts
}

// TestPaletteHistogram checks the pipeline's histogram (per-shard parts
// merged) against a direct count, on the test runner (prism by default).
func TestPaletteHistogram(t *testing.T) {
	paths, want := writeRandomShards(t, 5, 40)
	dir := t.TempDir()
	out := filepath.Join(dir, "hist.bin")
	var inputs []ShardInput
	for _, p := range paths {
		inputs = append(inputs, ShardInput{Path: p, Split: "train"})
	}
	list := filepath.Join(t.TempDir(), "inputs.jsonl")
	if err := WriteLines(context.Background(), list, inputs); err != nil {
		t.Fatal(err)
	}
	p, s := beam.NewPipelineWithRoot()
	if _, err := Palette(s, PaletteConfig{Shards: list, Parts: filepath.Join(dir, "parts"), Histogram: out}); err != nil {
		t.Fatal(err)
	}
	ptest.RunAndValidate(t, p)
	h, err := ReadHistogram(context.Background(), out)
	if err != nil {
		t.Fatal(err)
	}
	if h.Distinct() != len(want) || h.Total() != 5*40*16 {
		t.Fatalf("histogram: %d colours, %d pixels; want %d colours, %d pixels", h.Distinct(), h.Total(), len(want), 5*40*16)
	}
	for c, n := range want {
		if h.Count(c) != n {
			t.Fatalf("colour %06x: count %d, want %d", c, h.Count(c), n)
		}
	}
	for i := range paths {
		if _, err := os.Stat(filepath.Join(dir, "parts", ColourPartName(i))); err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
	}
}

func TestTokenize(t *testing.T) {
	lut, err := kmeans.NewLUT([][3]float32{{0, 0, 0}, {255, 255, 255}, {255, 0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	img := records.Image{Key: "a", Label: 4, H: 2, W: 2, C: 3, Pix: []byte{10, 10, 10, 250, 240, 250, 200, 20, 30, 128, 0, 0}}
	tok, err := Tokenize(img, lut, 3, [2]int{})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(tok.Tok) != "[0 1 2 2]" || tok.Label != 4 || tok.Vocab != 3 {
		t.Fatalf("tokens %+v", tok)
	}
	small, err := Tokenize(img, lut, 3, [2]int{1, 1}) // mean colour (147, 68, 73) is nearest red
	if err != nil || fmt.Sprint(small.Tok) != "[2]" || small.H != 1 {
		t.Fatalf("resized tokens %+v, %v", small, err)
	}
	grey := records.Image{Key: "g", H: 1, W: 2, C: 1, Pix: []byte{250, 3}}
	if g, err := Tokenize(grey, lut, 3, [2]int{}); err != nil || fmt.Sprint(g.Tok) != "[1 0]" {
		t.Fatalf("grey tokens %+v, %v", g, err)
	}
}

func TestShardAssignment(t *testing.T) {
	counts := make([]int, 8)
	for i := 0; i < 8000; i++ {
		k := fmt.Sprintf("train/%06d", i)
		s := seededHash(3, "shard", k) % 8
		if s != seededHash(3, "shard", k)%8 {
			t.Fatal("seededHash is not deterministic")
		}
		counts[s]++
	}
	for s, c := range counts {
		if c < 800 || c > 1200 {
			t.Fatalf("shard %d got %d of 8000 keys: %v", s, c, counts)
		}
	}
	n := 0
	for i := 0; i < 10000; i++ {
		if unitHash(3, "val", fmt.Sprintf("k%d", i)) < 0.1 {
			n++
		}
	}
	if n < 900 || n > 1100 {
		t.Fatalf("val fraction 0.1 carved %d of 10000", n)
	}
}

// TestColourCountSlots: a worker process holds at most one dense colour
// histogram (64 MiB) per core, however many bundles count at once; the
// next waits for a free one.
func TestColourCountSlots(t *testing.T) {
	n := cap(countSlots)
	if n < 1 || n > max(1, runtime.GOMAXPROCS(0)) {
		t.Fatalf("%d slots for %d cores", n, runtime.GOMAXPROCS(0))
	}
	held := make([]*kmeans.Counts, 0, n)
	for range n {
		h, err := acquireCounts(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := acquireCounts(ctx); err == nil {
		t.Fatalf("a histogram beyond the %d slots was handed out", n)
	}
	releaseCounts(held[0])
	h, err := acquireCounts(context.Background())
	if err != nil || h.Distinct() != 0 {
		t.Fatalf("after a release: %v, %d colours (want an empty histogram)", err, h.Distinct())
	}
	releaseCounts(h)
	for _, h := range held[1:] {
		releaseCounts(h)
	}
}
