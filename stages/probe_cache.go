package stages

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/igpt/igpt/internal/probe"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
)

// BaselineCacheDir is where, under the workflow root, the probe stage keeps
// baseline rows it has fitted, so that probing another model of the same
// data does not refit them: the raw-pixel baseline depends only on the
// images, the splits and the fit settings; the random-init baseline also on
// the model's config. Deleting the folder only costs the refits.
const BaselineCacheDir = "_cache/probe-baselines"

// baselineCacheVersion changes whenever a change to the probe code would
// change a baseline row for the same inputs.
const baselineCacheVersion = 1

// baselineID is everything a baseline row depends on; its hash names the
// cache file.
type baselineID struct {
	Baseline    string        `json:"baseline"`
	Version     int           `json:"version"`
	Source      string        `json:"source"` // upstream stage key the features come from
	Model       *model.Config `json:"model,omitempty"`
	Objective   string        `json:"objective,omitempty"`
	Seed        uint64        `json:"seed"`
	Grid        []float64     `json:"grid"`
	Standardize bool          `json:"standardize"`
	// MaxIter (0: probe.DefaultMaxIter) and Patience (0: off) are omitted
	// at their defaults, so rows cached before they existed still match.
	MaxIter  int    `json:"max_iter,omitempty"`
	Patience int    `json:"patience,omitempty"`
	Keys     string `json:"keys"` // hash of every split's keys and labels (after max_train)
}

// rawPixelsID identifies the raw-pixel baseline: the downloaded images,
// the splits (keysHash, from splitKeysHash) and the fit settings.
func rawPixelsID(rc *RunContext, pc ProbeParams, opts probe.ProbeOptions, keysHash string) baselineID {
	return baselineID{Baseline: probe.RawPixels, Version: baselineCacheVersion, Source: rc.Inputs["download"].Key,
		Seed: pc.Seed, Grid: pc.L2, Standardize: opts.Standardize, MaxIter: fitMaxIterID(opts), Patience: opts.Fit.Patience,
		Keys: keysHash}
}

// randomInitID identifies the random-init baseline: the tokens, the model
// config and objective (as the train stage recorded them), the init seed,
// the splits and the fit settings.
func randomInitID(rc *RunContext, pc ProbeParams, opts probe.ProbeOptions, mc model.Config, objective, keysHash string) baselineID {
	return baselineID{Baseline: probe.RandomInitPrefix, Version: baselineCacheVersion, Source: rc.Inputs["quantize"].Key,
		Model: &mc, Objective: objective, Seed: pc.Seed, Grid: pc.L2, Standardize: opts.Standardize,
		MaxIter: fitMaxIterID(opts), Patience: opts.Fit.Patience, Keys: keysHash}
}

// fitMaxIterID is the iteration limit as the cache ID records it: 0 for the
// default, whether it was left unset or written out.
func fitMaxIterID(opts probe.ProbeOptions) int {
	if opts.Fit.MaxIter == probe.DefaultMaxIter {
		return 0
	}
	return opts.Fit.MaxIter
}

// splitKeysHash hashes the keys and labels of every split, so a cached row
// is used only for exactly the same images in exactly the same splits.
func splitKeysHash(sets map[string]*probe.FeatureSet) string {
	h := sha256.New()
	for _, split := range slices.Sorted(maps.Keys(sets)) {
		keys, labels := sets[split].Keys()
		fmt.Fprintf(h, "split %s %d\n", split, len(keys))
		for i, k := range keys {
			fmt.Fprintf(h, "%s\t%d\n", k, labels[i])
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// cachedBaseline returns the row cached for id under the root, or computes
// it and caches it. A cache file that cannot be read or parsed is logged
// and refitted over; a failed cache write is logged and does not fail the
// stage. The returned row's Cached names the file it was read from.
func cachedBaseline(ctx context.Context, rc *RunContext, id baselineID, compute func() (probe.Row, error)) (probe.Row, error) {
	idJSON, err := json.Marshal(id)
	if err != nil {
		return probe.Row{}, fmt.Errorf("probe: baseline cache id: %w", err)
	}
	sum := sha256.Sum256(idJSON)
	path := storage.Join(rc.Config.Root, BaselineCacheDir, hex.EncodeToString(sum[:8])+".json")
	type entry struct {
		ID  json.RawMessage `json:"id"`
		Row probe.Row       `json:"row"`
	}
	if b, err := storage.ReadFile(ctx, path); !errors.Is(err, storage.ErrNotExist) {
		var e entry
		if err == nil {
			err = json.Unmarshal(b, &e)
		}
		switch {
		case err != nil:
			rc.Log.Warn("probe: unreadable baseline cache entry; fitting again", "file", path, "err", err)
		case !sameJSON(e.ID, idJSON):
			rc.Log.Warn("probe: baseline cache entry is for other inputs; fitting again", "file", path)
		default:
			rc.Log.Info("probe: baseline reused from cache", "baseline", e.Row.Name, "file", path)
			e.Row.Cached = path
			return e.Row, nil
		}
	}
	row, err := compute()
	if err != nil {
		return probe.Row{}, err
	}
	b, err := json.MarshalIndent(entry{ID: idJSON, Row: row}, "", "  ")
	if err == nil {
		err = storage.WriteFile(ctx, path, b)
	}
	if err != nil {
		rc.Log.Warn("probe: could not cache the baseline", "baseline", row.Name, "file", path, "err", err)
	}
	return row, nil
}

// sameJSON reports whether two JSON texts are equal up to whitespace.
func sameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
}
