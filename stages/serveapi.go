package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/pipelines"
)

// What igpt serve reads of stage outputs: the same figures, models and
// codecs that igpt run's summary and igpt sample use.

// Headline is a stage output's main figure, as igpt run's summary and
// igpt serve's overview show it ("-" when there is none).
func Headline(ctx context.Context, m *Manifest) string { return headline(ctx, m) }

// RunningFile is written into the folder a stage works in when it starts:
// the stage, key, config and start time of a run that has no manifest yet,
// so a viewer can tell its progress (steps to go) and a failed run's
// config. It is not listed in the manifest.
const RunningFile = "_RUNNING.json"

// Running is what RunningFile holds.
type Running struct {
	Stage   string          `json:"stage"`
	Key     string          `json:"key"`
	Config  json.RawMessage `json:"config"`
	Started time.Time       `json:"started"`
}

// TrainedModel is a train output's model (its final weights, or one kept
// checkpoint's) with the codec (palette or VQ-VAE) and the h×w token grid
// of the tokens it was trained on, and the manifest of those tokens.
type TrainedModel struct {
	Model  *model.Model
	Codec  Codec
	H, W   int
	Tokens *Manifest
	run    *trainedRun
}

// OpenTrained opens a finished train output's final model, as igpt sample
// does; with checkpoint set ("step-00000020"), that kept checkpoint's
// weights instead.
func OpenTrained(ctx context.Context, tm *Manifest, checkpoint string) (*TrainedModel, error) {
	qm, err := tokensInput(ctx, tm)
	if err != nil {
		return nil, err
	}
	codec, err := OpenCodec(ctx, qm)
	if err != nil {
		return nil, err
	}
	run, err := openRunCodec(ctx, tm, qm, codec)
	if err != nil {
		return nil, err
	}
	if checkpoint != "" {
		dir, err := tm.Resolve("checkpoint", storage.Join(CheckpointDir, checkpoint))
		if err != nil {
			return nil, err
		}
		path := storage.Join(dir, WeightsFile)
		b, err := storage.ReadFile(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("checkpoint %s of %s: %w", checkpoint, tm.Dir, err)
		}
		p, _, err := model.LoadCheckpoint(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if p.Config.Seq != run.m.Config.Seq || p.Config.Vocab != run.m.Config.Vocab {
			return nil, fmt.Errorf("%s: a model of context %d and vocabulary %d, the run's final one has %d and %d: the folder is damaged; rerun the train stage",
				path, p.Config.Seq, p.Config.Vocab, run.m.Config.Seq, run.m.Config.Vocab)
		}
		run = &trainedRun{m: model.FromParams(p), codec: codec, h: run.h, w: run.w}
	}
	return &TrainedModel{Model: run.m, Codec: codec, H: run.h, W: run.w, Tokens: qm, run: run}, nil
}

// EncodePicture turns a PNG or JPEG picture into the model's tokens as
// igpt sample --complete does: its header's size checked against
// MaxPicturePixels before decoding, centre-cropped, resized and encoded.
func (t *TrainedModel) EncodePicture(picture []byte) (records.Tokens, error) {
	return t.run.encodePicture(picture)
}

// TestImages reads the first n records of the token output's test split
// (the images the sample stage completes).
func TestImages(ctx context.Context, qm *Manifest, n int) ([]records.Tokens, error) {
	var out []records.Tokens
	for _, f := range qm.Split("test") {
		if len(out) >= n {
			break
		}
		err := pipelines.ScanShard(ctx, qm.Path(f.Name), func(t records.Tokens) error {
			if len(out) >= n {
				return io.EOF
			}
			out = append(out, t)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// writeRunning writes RunningFile into dir, the folder st's run works in.
// It only informs viewers: a failure is logged, not returned.
func writeRunning(ctx context.Context, st *Step, dir string, start time.Time, log interface{ Warn(string, ...any) }) {
	params, err := canonicalJSON(st.Params)
	if err == nil {
		var b []byte
		b, err = json.MarshalIndent(Running{Stage: st.Stage.Name(), Key: st.Key, Config: params, Started: start.UTC()}, "", "  ")
		if err == nil {
			err = storage.WriteFile(ctx, storage.Join(dir, RunningFile), b)
		}
	}
	if err != nil {
		log.Warn("could not write the running marker (igpt serve shows the run without its config)", "file", storage.Join(dir, RunningFile), "err", err)
	}
}
