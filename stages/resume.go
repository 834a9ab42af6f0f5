package stages

import (
	"fmt"

	"github.com/igpt/igpt/internal/storage"
)

// resumeBound is one number of a checkpoint's state.json and the range
// [lo, hi] the run's config allows it.
type resumeBound struct {
	key       string
	v, lo, hi int
}

// checkResume is the one check every resumable stage (train, vqvae-train,
// finetune) makes of a checkpoint in dir before continuing from it: each
// number of its state.json lies in the range the config allows (a step in
// 0..steps, a data index inside the data), and the model it holds, got,
// is the one the config asks for, want (comparable configurations: the
// shapes of every weight follow from them). A forged or damaged state
// (index 1000000, step −50, weights of another shape) is an error naming
// the file and key, never an index panic, a negative learning rate or a
// partial copy of the weights.
func checkResume(stage, dir, runDir string, want, got any, bounds ...resumeBound) error {
	for _, b := range bounds {
		if b.v < b.lo || b.v > b.hi {
			return fmt.Errorf("%s: %s: %s = %d is outside %d..%d for this run; the checkpoint is damaged or forged: delete %s to start over",
				stage, storage.Join(dir, StateFile), b.key, b.v, b.lo, b.hi, runDir)
		}
	}
	if want != got {
		return fmt.Errorf("%s: checkpoint %s holds model %+v, the config asks for %+v; delete %s to start over", stage, dir, got, want, runDir)
	}
	return nil
}
