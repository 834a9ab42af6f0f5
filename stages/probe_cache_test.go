package stages

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/igpt/igpt/internal/probe"
)

// TestBaselineIDFitSettings: the fit settings added to the baseline cache
// ID leave it unchanged at their defaults, so rows cached before them still
// match, and change it otherwise, so a row fitted under other settings is
// never reused.
func TestBaselineIDFitSettings(t *testing.T) {
	// The ID and file name of a raw-pixel row cached before max_iter and
	// patience existed (CIFAR-10 JPEG copy, full splits).
	const oldJSON = `{"baseline":"raw pixels","version":1,"source":"0f01616d52fd","seed":0,` +
		`"grid":[1,0.1,0.01,0.001,0.0001,0.00001],"standardize":true,` +
		`"keys":"06e5e1b16e01dcf7aaf0f5b1ef87268fdd20b72fccf1d52bdf1190191c5f531f"}`
	const oldFile = "7ddafdce114c7da4"
	rc := &RunContext{Inputs: map[string]*Manifest{"download": {Key: "0f01616d52fd"}}}
	pc := ProbeParams{L2: []float64{1, 0.1, 0.01, 0.001, 0.0001, 0.00001}}
	keys := "06e5e1b16e01dcf7aaf0f5b1ef87268fdd20b72fccf1d52bdf1190191c5f531f"
	cases := []struct {
		name     string
		fit      probe.Options
		sameAsV1 bool
	}{
		{"defaults unset", probe.Options{}, true},
		{"default max_iter written out", probe.Options{MaxIter: probe.DefaultMaxIter}, true},
		{"more iterations", probe.Options{MaxIter: 3000}, false},
		{"patience", probe.Options{Patience: 2}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := rawPixelsID(rc, pc, probe.ProbeOptions{Standardize: true, Fit: tc.fit}, keys)
			b, err := json.Marshal(id)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(b)
			file := hex.EncodeToString(sum[:8])
			if got := string(b) == oldJSON && file == oldFile; got != tc.sameAsV1 {
				t.Errorf("ID %s (file %s): same as the cached one = %v, want %v", b, file, got, tc.sameAsV1)
			}
		})
	}
}
