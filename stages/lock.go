package stages

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/igpt/igpt/internal/storage"
)

// A stage folder <root>/<stage>/<key> has three siblings a run uses:
//
//	<key>.lock     held while a run of the stage works on the folder
//	<key>.attempt  where a run that does not resume writes its output; it
//	               replaces <key> only once its manifest is written
//	<key>.old      (local) the replaced folder, for the moment of the swap
//
// so a failing or interrupted run never loses a finished output, and two
// runs never write the same folder.

func lockPath(dir string) string   { return dir + ".lock" }
func attemptDir(dir string) string { return dir + ".attempt" }
func oldDir(dir string) string     { return dir + ".old" }

// LockTuning is the stage lock's heartbeat, staleness and polling; zero
// fields take storage's defaults. Tests shorten them.
var LockTuning storage.LockOptions

func lockOptions(log *slog.Logger) storage.LockOptions {
	o := LockTuning
	o.Log = log
	return o
}

// readStepManifest reads st's manifest: nil if there is none.
func readStepManifest(ctx context.Context, st *Step) (*Manifest, error) {
	m, err := ReadManifest(ctx, st.Dir)
	switch {
	case err == nil:
		if m.Key != st.Key || m.Stage != st.Stage.Name() {
			return nil, fmt.Errorf("stages: manifest in %s is for %s/%s, not %s/%s; delete the folder", st.Dir, m.Stage, m.Key, st.Stage.Name(), st.Key)
		}
		return m, nil
	case errors.Is(err, storage.ErrNotExist):
		return nil, nil
	default:
		return nil, err
	}
}

// swapIn makes the finished attempt folder the stage folder. Locally two
// renames of folders (the old one aside, the attempt in), then the old one
// is deleted. On GCS, which cannot rename folders, the old manifest goes
// first (the stage is not done from then on), then the old files, then
// the attempt's files move over and its manifest last.
func swapIn(ctx context.Context, attempt, final string) error {
	if !storage.IsGCS(final) {
		old := oldDir(final)
		if err := storage.RemoveAll(ctx, old); err != nil {
			return err
		}
		if ok, err := storage.Exists(ctx, final); err != nil {
			return err
		} else if ok {
			if err := storage.Rename(ctx, final, old); err != nil {
				return err
			}
		}
		if err := storage.Rename(ctx, attempt, final); err != nil {
			return err
		}
		return storage.RemoveAll(ctx, old)
	}
	if err := storage.Remove(ctx, storage.Join(final, ManifestName)); err != nil {
		return err
	}
	if err := storage.RemoveAll(ctx, final); err != nil {
		return err
	}
	files, err := storage.List(ctx, attempt)
	if err != nil {
		return err
	}
	manifest := storage.Join(attempt, ManifestName)
	for _, f := range files {
		if f == manifest {
			continue // moved last
		}
		rel := strings.TrimPrefix(f, strings.TrimSuffix(attempt, "/")+"/")
		if err := storage.Rename(ctx, f, storage.Join(final, rel)); err != nil {
			return err
		}
	}
	return storage.Rename(ctx, manifest, storage.Join(final, ManifestName))
}

// recoverSwap finishes a swap a killed run left half done: an attempt
// folder with a manifest is a finished output.
func recoverSwap(ctx context.Context, final string, log *slog.Logger) error {
	attempt := attemptDir(final)
	ok, err := storage.Exists(ctx, storage.Join(attempt, ManifestName))
	if err != nil {
		return err
	}
	if ok {
		log.Warn("completing the swap of a finished output an interrupted run left", "attempt", attempt, "dir", final)
		if err := swapIn(ctx, attempt, final); err != nil {
			return fmt.Errorf("complete the swap of %s into %s: %w", attempt, final, err)
		}
	}
	if !storage.IsGCS(final) {
		return storage.RemoveAll(ctx, oldDir(final))
	}
	return nil
}

// checkFiles verifies that every file the manifest lists exists in its
// folder.
func (m *Manifest) checkFiles(ctx context.Context) error {
	if err := m.checkNames(); err != nil {
		return err
	}
	for _, f := range m.Files {
		ok, err := storage.Exists(ctx, m.Path(f.Name))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("output file %s is missing: the stage lists it but did not write it; not marking the stage done", m.Path(f.Name))
		}
	}
	return nil
}

var (
	stageNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	stageKeyRE  = regexp.MustCompile(`^[0-9a-f]{12}$`)
)

// checkNames refuses a manifest whose file names, or input stages and
// keys, would lead outside its folder or its root.
func (m *Manifest) checkNames() error {
	where := storage.Join(m.Dir, ManifestName)
	for i, f := range m.Files {
		if !storage.LocalName(f.Name) {
			return fmt.Errorf("manifest %s: files[%d].name %q is not a path inside the stage folder; the manifest is damaged or forged: delete %s and rerun the stage", where, i, f.Name, m.Dir)
		}
	}
	for i, in := range m.Inputs {
		if !stageNameRE.MatchString(in.Stage) || !stageKeyRE.MatchString(in.Key) {
			return fmt.Errorf("manifest %s: inputs[%d] = %s/%s is not a stage name and key; the manifest is damaged or forged: delete %s and rerun the stage", where, i, in.Stage, in.Key, m.Dir)
		}
	}
	return nil
}
