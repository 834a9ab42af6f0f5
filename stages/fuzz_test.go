package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/loader"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
)

// FuzzParseConfig: any YAML either fails to parse or gives a config whose
// every stage key can be computed (JSON-encodable: no NaN/Inf) and that
// respects the limits.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("dataset: {name: cifar10}\n"))
	f.Add([]byte("dataset: {name: cifar10}\ntrain: {lr: .nan, keep_checkpoints: -1}\n"))
	f.Add([]byte("dataset: {name: folder, source: x}\nquantize: {resize: [100000, 100000]}\nsample: {scale: 100000}\nprobe: {l2: [.inf]}\n"))
	f.Add([]byte("root: gs://b/r\ndataset: {name: mnist}\ndownload: {shards: {train: 3}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		for _, s := range registry {
			if _, err := canonicalJSON(s.Params(cfg)); err != nil {
				t.Fatalf("%s: params of a parsed config do not encode: %v", s.Name(), err)
			}
		}
		if err := cfg.validate(); err != nil {
			t.Fatalf("parsed config breaks the limits: %v", err)
		}
	})
}

// FuzzParseManifest: a manifest that parses names only paths inside its
// folder and inputs that are stage names and keys.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"stage":"quantize","key":"0123456789ab","files":[{"name":"train-00000-of-00001.tokens","split":"train","records":3}],"inputs":[{"stage":"palette","key":"aaaaaaaaaaaa"}]}`))
	f.Add([]byte(`{"stage":"quantize","files":[{"name":"../../etc/hostname"}]}`))
	f.Add([]byte(`{"files":[{"name":"a/./../b"}],"meta":{"checkpoint":"/x"}}`))
	dir := filepath.Join("root", "quantize", "0123456789ab")
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseManifest(data, dir)
		if err != nil {
			return
		}
		for _, fi := range m.Files {
			rel, err := filepath.Rel(dir, m.Path(fi.Name))
			if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(fi.Name) {
				t.Fatalf("file %q resolves to %s, outside %s", fi.Name, m.Path(fi.Name), dir)
			}
		}
		for _, in := range m.Inputs {
			p := storage.Join("root", in.Stage, in.Key)
			if filepath.Dir(filepath.Dir(p)) != "root" {
				t.Fatalf("input %s/%s leaves the root: %s", in.Stage, in.Key, p)
			}
		}
	})
}

// FuzzTrainState: whatever a checkpoint's state.json says, resuming the
// loader from it either fails with an error or reads records: no panic.
func FuzzTrainState(f *testing.F) {
	dir := f.TempDir()
	var files []string
	for i := 0; i < 3; i++ {
		var buf bytes.Buffer
		w, _ := records.NewWriter(&buf, records.KindTokens)
		for j := 0; j < 2; j++ {
			w.Write(tokRec("r", 2, 2, 16, uint16(i+j)))
		}
		w.Flush()
		p := filepath.Join(dir, records.ShardName("train", i, 3))
		if err := storage.WriteFile(context.Background(), p, buf.Bytes()); err != nil {
			f.Fatal(err)
		}
		files = append(files, p)
	}
	f.Add([]byte(`{"step":3,"data_position":{"epoch":0,"group":1,"record":1}}`))
	f.Add([]byte(`{"step":3,"data_position":{"epoch":0,"group":99,"record":0}}`))
	f.Add([]byte(`{"step":3,"data_position":{"epoch":0,"group":0,"record":-5}}`))
	f.Add([]byte(`{"step":3,"data_position":{"epoch":0,"group":0,"record":7}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var st TrainState
		if json.Unmarshal(data, &st) != nil {
			return
		}
		l, err := loader.New(files, loader.Options{Seed: 1, Buffer: 2, Vocab: 16}, st.Position)
		if err != nil {
			return
		}
		tok := make([]int32, 3*4)
		l.Batch(context.Background(), tok, nil, 3, 4)
	})
}

// FuzzTypedOutputs: any parsed manifest either fails each stage's typed
// reader with an error or gives a reading that keeps its promises: a train
// output's weights lie inside its folder, a quantize output's vocabulary
// is a palette size, a finetune output's accuracies are fractions.
func FuzzTypedOutputs(f *testing.F) {
	f.Add([]byte(`{"stage":"train","key":"0123456789ab","meta":{"checkpoint":"checkpoints/step-00000002","objective":"ar","model":{"layers":1,"d":8,"heads":1,"seq":4,"vocab":16}}}`))
	f.Add([]byte(`{"stage":"quantize","key":"0123456789ab","meta":{"vocab":512,"classes":["a","b"],"resize":[16,16]}}`))
	f.Add([]byte(`{"stage":"download","key":"0123456789ab","meta":{"classes":[1,2],"records":{"train":3}}}`))
	f.Add([]byte(`{"stage":"train","meta":{"checkpoint":"../x","model":"L1"}}`))
	f.Add([]byte(`{"stage":"finetune","key":"0123456789ab","meta":{"init":"pretrained","test_acc":0.61,"val_acc":0.6,"best_step":400,"steps":600,"stopped":"patience"}}`))
	dir := filepath.Join("root", "train", "0123456789ab")
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseManifest(data, dir)
		if err != nil {
			return
		}
		if out, err := ReadTrainOutput(m); err == nil {
			// ".." or "../…" leaves the folder; a name such as "..0" does not.
			if rel, err := filepath.Rel(dir, out.Weights); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				t.Fatalf("train weights %s outside %s", out.Weights, dir)
			}
		}
		if out, err := ReadTokensOutput(m); err == nil && (out.Vocab < 1 || out.Vocab > 1<<16) {
			t.Fatalf("quantize vocab %d accepted", out.Vocab)
		}
		if out, err := ReadFinetuneOutput(m); err == nil && (out.TestAcc < 0 || out.TestAcc > 1 || out.BestStep > out.Steps) {
			t.Fatalf("finetune output %+v accepted", out)
		}
		ReadDownloadOutput(m)
	})
}
