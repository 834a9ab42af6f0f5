package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/igpt/igpt/internal/storage"
)

// rootNote is, for a local root that does not exist, a line saying so:
// every stage is "not run" because nothing has run there, and the user
// may have meant another --root.
func (p *Plan) rootNote() string {
	root := p.Config.Root
	if storage.IsGCS(root) || strings.Contains(root, "://") {
		return ""
	}
	if _, err := os.Stat(root); errors.Is(err, os.ErrNotExist) {
		abs, _ := filepath.Abs(root)
		return fmt.Sprintf("root %s does not exist: nothing has run under it (a run creates it; --root names another)", abs)
	}
	return ""
}

// runningState is, for a stage that is not done but whose lock is held,
// "running (pid N on HOST since T, step S of N)", or "interrupted (…)" when
// the holder was on this host and is gone; without a lock, "submitted
// (dataflow job J at T)" when a job marker names the job writing it; ""
// otherwise.
func (p *Plan) runningState(ctx context.Context, st *Step) string {
	b, err := storage.ReadFile(ctx, lockPath(st.Dir))
	if err != nil {
		// No launcher holds it; a job submitted with --async may write it.
		if m, err := readJobMarker(ctx, st.Dir); err == nil && m != nil {
			return fmt.Sprintf("submitted (%s at %s)", m.JobRef, m.Submitted.Format(time.RFC3339))
		}
		return ""
	}
	var info storage.LockInfo
	if json.Unmarshal(b, &info) != nil || info.Token == "" {
		return "running (lock " + lockPath(st.Dir) + " unreadable)"
	}
	state := "running"
	if host, _ := os.Hostname(); info.Host == host && info.PID > 0 && syscall.Kill(info.PID, 0) == syscall.ESRCH {
		state = "interrupted"
	}
	out := state + " (" + info.String()
	if step := p.lastStep(ctx, st); step > 0 {
		if total := p.totalSteps(st); total > 0 {
			out += fmt.Sprintf(", step %d of %d", step, total)
		}
	}
	return out + ")"
}

// lastStep is the step of the last line of the metrics.jsonl a running
// stage writes (in its folder when it resumes there, else in its attempt
// folder); 0 when there is none.
func (p *Plan) lastStep(ctx context.Context, st *Step) int {
	for _, dir := range []string{st.Dir, attemptDir(st.Dir)} {
		b, err := storage.ReadFile(ctx, storage.Join(dir, MetricsFile))
		if err != nil {
			continue
		}
		lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
		var m struct {
			Step int `json:"step"`
		}
		if json.Unmarshal(lines[len(lines)-1], &m) == nil && m.Step > 0 {
			return m.Step
		}
	}
	return 0
}

// totalSteps is the step budget of a stage that counts steps.
func (p *Plan) totalSteps(st *Step) int {
	switch st.Stage.Name() {
	case "train":
		return p.Config.Train.Steps
	case "vqvae-train":
		return p.Config.VQVAE.Steps
	case "finetune":
		return p.Config.Finetune.Steps
	}
	return 0
}

// otherSourceNotes are, when this plan's download stage is not done, lines
// naming the finished download stages under the same local root that read
// the same dataset with the same settings from another dataset.source
// (the source is part of the key: a run with --source is not what a
// status without it looks up).
func (p *Plan) otherSourceNotes(ctx context.Context) []string {
	st, ok := p.byName["download"]
	if !ok || st.Done() || storage.IsGCS(p.Config.Root) {
		return nil
	}
	dir := filepath.Join(p.Config.Root, "download")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	type params struct {
		Dataset  DatasetParams  `json:"dataset"`
		Download DownloadParams `json:"download"`
	}
	mine := params{p.Config.Dataset, p.Config.Download}
	var notes []string
	for _, e := range entries {
		if !e.IsDir() || strings.Contains(e.Name(), ".") || e.Name() == st.Key {
			continue
		}
		m, err := ReadManifest(ctx, filepath.Join(dir, e.Name()))
		if err != nil || m.Stage != "download" {
			continue
		}
		var theirs params
		if json.Unmarshal(m.Config, &theirs) != nil || theirs.Dataset.Source == mine.Dataset.Source {
			continue
		}
		src := theirs.Dataset.Source
		theirs.Dataset.Source = mine.Dataset.Source
		if !reflect.DeepEqual(theirs, mine) {
			continue
		}
		if src == "" {
			notes = append(notes, fmt.Sprintf("download %s is done with no dataset.source (the official download), not with this one: without --source, status shows its stages", m.Key))
			continue
		}
		notes = append(notes, fmt.Sprintf("download %s is done from dataset.source %s: igpt status %s --source=%s shows the stages of that run", m.Key, src, p.Config.Path, src))
	}
	sort.Strings(notes)
	return notes
}
