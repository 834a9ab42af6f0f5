package stages

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/igpt/igpt/internal/probe"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
)

func init() { Register(probeBaselinesStage{}) }

// BaselinesFile is the probe-baselines stage's output: its rows as JSON.
const BaselinesFile = "baselines.json"

// probeBaselinesStage fits the probe report's two baselines: raw pixels,
// and the best layer of a randomly initialised model of the trained
// model's shape. Its key holds only the probe settings and that shape, not
// the training run, so probing another model of the same shape on the same
// tokens (more steps, another learning rate, init_from) reuses its rows,
// and `igpt status` and --force see it like any stage.
type probeBaselinesStage struct{}

// ProbeBaselinesParams is what the baselines depend on: the probe
// settings, and the model shape and objective of the random-init model
// (train.model, layers, d, heads, objective), which must match the trained
// model the probe stage reports beside them.
type ProbeBaselinesParams struct {
	Probe     ProbeParams `json:"probe"`
	Model     string      `json:"model"`
	Layers    int         `json:"layers,omitempty"`
	D         int         `json:"d,omitempty"`
	Heads     int         `json:"heads,omitempty"`
	Objective string      `json:"objective"`
}

func (probeBaselinesStage) Name() string { return "probe-baselines" }
func (probeBaselinesStage) Version() int { return 1 }
func (probeBaselinesStage) Upstream(cfg *Config) []string {
	return []string{"download", cfg.TokensStage()}
}
func (probeBaselinesStage) Params(cfg *Config) any {
	t := cfg.Train
	// The variants are fitted on the model's features only: they do not
	// change the baselines, so they stay out of their key.
	pp := cfg.Probe
	pp.LabelsPerClass, pp.LowDataDraws, pp.Concat = nil, 0, nil
	return ProbeBaselinesParams{Probe: pp, Model: t.Model, Layers: t.Layers, D: t.D, Heads: t.Heads, Objective: t.Objective}
}

// ProbeBaselinesOutput is the probe-baselines stage's output: the
// random-init model's config and the rows, raw pixels first.
type ProbeBaselinesOutput struct {
	Model     model.Config `json:"model"`
	Objective string       `json:"objective"`
	Rows      []probe.Row  `json:"rows"`
}

func (probeBaselinesStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	bp := probeBaselinesStage{}.Params(rc.Config).(ProbeBaselinesParams)
	pc, qm := bp.Probe, rc.Inputs[rc.Config.TokensStage()]
	q, err := ReadTokensOutput(qm)
	if err != nil {
		return nil, err
	}
	h, w, err := TokensGrid(ctx, qm)
	if err != nil {
		return nil, err
	}
	if err := checkPoolGrid(ctx, qm, pc.PoolGrid); err != nil {
		return nil, err
	}
	mc, err := ModelConfig(TrainParams{Model: bp.Model, Layers: bp.Layers, D: bp.D, Heads: bp.Heads}, h*w, q.Vocab)
	if err != nil {
		return nil, err
	}
	res := ProbeBaselinesOutput{Model: mc, Objective: bp.Objective}
	if *pc.Baselines {
		f := 1
		if rc.Config.Tokens == TokensVQVAE {
			f = rc.Config.VQVAE.Factor
		}
		ih, iw, ic, err := downloadImageShape(ctx, rc.Inputs["download"])
		if err != nil {
			return nil, err
		}
		widths := []probeWidth{{"a random-init layer", mc.D}}
		if pc.RawPixels != RawInput {
			widths = append(widths, probeWidth{"raw pixels", ih * iw * ic})
		}
		if pc.RawPixels != "" {
			widths = append(widths, probeWidth{"raw pixels at the input resolution", h * f * w * f * ic})
		}
		if err := checkProbeFeatureMemory("probe-baselines", qm, pc, widths...); err != nil {
			return nil, err
		}
		if res.Rows, err = fitBaselines(ctx, rc, mc, bp.Objective, h*f, w*f); err != nil {
			return nil, err
		}
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("probe-baselines: %w", err)
	}
	if err := storage.WriteFile(ctx, storage.Join(rc.Dir, BaselinesFile), b); err != nil {
		return nil, err
	}
	return &Output{Files: []FileInfo{{Name: BaselinesFile, Records: int64(len(res.Rows)), Bytes: int64(len(b))}},
		Meta: map[string]any{"model": mc, "rows": len(res.Rows)}}, nil
}

// fitBaselines extracts a random-init model's features of every layer and
// probes them, then probes the raw pixels of the same records: the
// original images, those at the input resolution inH×inW (the size the
// tokens were made from), or both, as probe.raw_pixels says.
func fitBaselines(ctx context.Context, rc *RunContext, mc model.Config, objective string, inH, inW int) ([]probe.Row, error) {
	pc := rc.Config.Probe
	ex, err := newExtractor(ctx, rc, mc, objective)
	if err != nil {
		return nil, err
	}
	opts := probeOptions(rc)
	raws := []struct {
		name, sub string
		h, w      int
	}{{probe.RawPixels, "features-raw", 0, 0}, {probe.RawPixelsInput, "features-raw-input", inH, inW}}
	switch pc.RawPixels {
	case RawInput:
		raws = raws[1:]
	case "":
		raws = raws[:1]
	}
	defer fitsBar(rc, &opts, mc.Layers+1+len(raws)).Finish() // random init's layers, raw pixels
	random, sets, err := randomInitBaseline(ctx, rc, ex, pc, opts)
	if err != nil {
		return nil, err
	}
	var rows []probe.Row
	for _, r := range raws {
		row, err := rawPixelBaseline(ctx, rc, sets, pc, opts, r.name, r.sub, r.h, r.w)
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	return append(rows, random), nil
}

// ReadProbeBaselines reads the probe-baselines stage's rows, checking they
// were fitted for the model shape mc and objective the probe reports.
func ReadProbeBaselines(ctx context.Context, m *Manifest, mc model.Config, objective string) ([]probe.Row, error) {
	b, err := storage.ReadFile(ctx, m.Path(BaselinesFile))
	if err != nil {
		return nil, fmt.Errorf("probe: the probe-baselines output: %w; rerun: igpt stage probe-baselines CONFIG --force", err)
	}
	var out ProbeBaselinesOutput
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("probe: %s is damaged (%v); rerun: igpt stage probe-baselines CONFIG --force", m.Path(BaselinesFile), err)
	}
	if out.Model != mc || out.Objective != objective {
		return nil, fmt.Errorf("probe: the baselines in %s are for model %v (%s), the trained model is %v (%s)", m.Dir, out.Model, out.Objective, mc, objective)
	}
	return out.Rows, nil
}
