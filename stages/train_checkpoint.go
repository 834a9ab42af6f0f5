package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
)

func ckptName(step int) string { return model.CheckpointName(step) }

// storageFS is internal/storage (local or gs://) as the file access of a
// model.CheckpointStore.
type storageFS struct{}

func (storageFS) ReadFile(ctx context.Context, p string) ([]byte, error) {
	return storage.ReadFile(ctx, p)
}
func (storageFS) WriteFile(ctx context.Context, p string, b []byte) error {
	return storage.WriteFile(ctx, p, b)
}
func (storageFS) List(ctx context.Context, dir string) ([]string, error) {
	return storage.List(ctx, dir)
}
func (storageFS) RemoveAll(ctx context.Context, dir string) error { return storage.RemoveAll(ctx, dir) }
func (storageFS) Join(base string, elem ...string) string         { return storage.Join(base, elem...) }
func (storageFS) Within(base, rel string) (string, error)         { return storage.Within(base, rel) }

// checkpointStore is the checkpoint folder of the stage run in dir.
func checkpointStore(dir string, keep int) model.CheckpointStore {
	return model.CheckpointStore{FS: storageFS{}, Dir: storage.Join(dir, CheckpointDir), Keep: keep}
}

// checkpoint saves weights, optimiser moments and state as a new
// checkpoint (see model.CheckpointStore), the metrics before LATEST.
func (tr *trainer) checkpoint(ctx context.Context) error {
	if tr.step == tr.lastGood {
		return nil
	}
	var w, o bytes.Buffer
	if err := model.SaveCheckpoint(&w, tr.m.Params, map[string]string{"step": strconv.Itoa(tr.step)}); err != nil {
		return err
	}
	if err := tr.opt.SaveState(&o); err != nil {
		return err
	}
	st := TrainState{Step: tr.step, Model: tr.m.Config, Position: tr.pos, RNG: tr.rngState, Threads: kernels.Threads(),
		Time: time.Now().UTC(), InitSHA256: tr.initSHA}
	b, _ := json.MarshalIndent(st, "", "  ")
	files := []model.CheckpointFile{{Name: WeightsFile, Data: w.Bytes()}, {Name: OptimFile, Data: o.Bytes()}, {Name: StateFile, Data: b}}
	if err := tr.store().Save(ctx, tr.step, files, func() error { return tr.writeMetrics(ctx) }); err != nil {
		return err
	}
	tr.lastGood = tr.step
	tr.rc.Log.Debug("train: checkpoint", "step", tr.step)
	return nil
}

func (tr *trainer) store() model.CheckpointStore {
	return checkpointStore(tr.rc.Dir, tr.tc.KeepCheckpoints)
}

// resume loads the newest checkpoint of this run key, if any.
func (tr *trainer) resume(ctx context.Context) (*TrainState, error) {
	dir, err := tr.store().Latest(ctx)
	if err != nil || dir == "" {
		return nil, err
	}
	b, err := storage.ReadFile(ctx, storage.Join(dir, StateFile))
	if err != nil {
		return nil, fmt.Errorf("train: checkpoint %s is incomplete (%w); delete %s to start over", dir, err, tr.rc.Dir)
	}
	var st TrainState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("train: %s: %w", storage.Join(dir, StateFile), err)
	}
	if err := checkResume("train", dir, tr.rc.Dir, tr.m.Config, st.Model, resumeBound{"step", st.Step, 0, tr.tc.Steps}); err != nil {
		return nil, err
	}
	if err := tr.loadState(ctx, dir, st); err != nil {
		return nil, err
	}
	tr.step, tr.lastGood = st.Step, st.Step
	tr.tokens = int64(st.Step) * int64(tr.tc.Batch*tr.tc.Accum*tr.m.Config.Seq)
	if tr.opt.Step != st.Step {
		return nil, fmt.Errorf("train: checkpoint %s: optimizer is at step %d, state at %d", dir, tr.opt.Step, st.Step)
	}
	tr.resumedFrom = dir
	tr.rc.Log.Info("train: resuming", "step", st.Step, "checkpoint", dir)
	return &st, nil
}

// loadState loads a checkpoint folder's weights, optimiser moments, mask
// generator and metrics.
func (tr *trainer) loadState(ctx context.Context, dir string, st TrainState) error {
	w, err := storage.ReadFile(ctx, storage.Join(dir, WeightsFile))
	if err != nil {
		return err
	}
	if err := tr.loadWeights(w, storage.Join(dir, WeightsFile), "train", ""); err != nil {
		return err
	}
	o, err := storage.ReadFile(ctx, storage.Join(dir, OptimFile))
	if err != nil {
		return err
	}
	if err := tr.opt.LoadState(bytes.NewReader(o)); err != nil {
		return fmt.Errorf("train: %s: %w", storage.Join(dir, OptimFile), err)
	}
	if err := tr.rng.UnmarshalBinary(st.RNG); err != nil {
		return fmt.Errorf("train: %s: rng state: %w", storage.Join(dir, StateFile), err)
	}
	if st.Threads != kernels.Threads() {
		tr.rc.Log.Warn("train: resuming with another thread count: results stay correct but are not bit-identical to an uninterrupted run",
			"checkpoint_threads", st.Threads, "threads", kernels.Threads())
	}
	return tr.readMetrics(ctx, st.Step)
}

func (tr *trainer) writeMetrics(ctx context.Context) error {
	return writeMetricLines(ctx, tr.rc.Dir, tr.metrics)
}

// readMetrics keeps the metrics up to step from an earlier run.
func (tr *trainer) readMetrics(ctx context.Context, step int) error {
	var err error
	tr.metrics, err = readMetricLines(ctx, tr.rc.Dir, func(m Metric) bool { return m.Step <= step })
	return err
}

// writeMetricLines writes a training run's metrics.jsonl, one JSON
// object a line (train and vqvae-train).
func writeMetricLines[M any](ctx context.Context, dir string, metrics []M) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, m := range metrics {
		enc.Encode(m)
	}
	return storage.WriteFile(ctx, storage.Join(dir, MetricsFile), buf.Bytes())
}

// readMetricLines reads the lines of an earlier run's metrics.jsonl that
// keep accepts, up to the first that does not parse (a line cut by a
// kill); a missing file is no metrics.
func readMetricLines[M any](ctx context.Context, dir string, keep func(M) bool) ([]M, error) {
	b, err := storage.ReadFile(ctx, storage.Join(dir, MetricsFile))
	if errors.Is(err, storage.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []M
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var m M
		if dec.Decode(&m) != nil {
			return out, nil
		}
		if keep(m) {
			out = append(out, m)
		}
	}
}
