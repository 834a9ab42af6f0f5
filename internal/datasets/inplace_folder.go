package datasets

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/igpt/igpt/internal/storage"
)

// FormatFolderGCS is an image folder tree under a gs:// prefix, read in
// place: the launcher lists object names, each unit is up to
// folderUnitFiles images of one class read by a worker object by object.
const FormatFolderGCS = "folder-gcs"

// folderUnitFiles bounds the images of one folder unit, so that a large
// class is spread over several workers.
const folderUnitFiles = 1000

// IsFolderPrefix reports whether a folder dataset's source is a gs://
// prefix of a <split>/<class>/ tree rather than one archive object.
func IsFolderPrefix(src string) bool {
	if !storage.IsGCS(src) {
		return false
	}
	b := strings.ToLower(storage.Base(src))
	if b == "." || b == ".." || strings.Contains(src, "/../") || strings.Contains(src, "/./") {
		return false // not a usable prefix: the download stage refuses the name
	}
	return strings.HasSuffix(src, "/") || !(strings.HasSuffix(b, ".tar") || strings.HasSuffix(b, ".tar.gz") || strings.HasSuffix(b, ".tgz") || strings.HasSuffix(b, ".zip"))
}

// InspectFolderPrefix lists a gs:// image folder tree: one listing, no
// object read.
func InspectFolderPrefix(ctx context.Context, src string, opt Options) (Layout, error) {
	if err := opt.Validate(); err != nil {
		return Layout{}, err
	}
	prefix := strings.TrimSuffix(src, "/") + "/"
	files, err := storage.ListSizes(ctx, prefix)
	if err != nil {
		return Layout{}, err
	}
	var entries []fentry
	for _, f := range files {
		rel := strings.TrimPrefix(f.Path, prefix)
		if c := cleanMember(rel); c != "" {
			entries = append(entries, fentry{name: c, orig: rel})
		}
	}
	p, err := planFolder(src, entries, slog.Default())
	if err != nil {
		return Layout{}, err
	}
	l := folderUnits(p, strings.TrimSuffix(prefix+p.root, "/"), "", func(e fentry) string { return strings.TrimPrefix(e.name, p.root) })
	var units []Unit
	for _, u := range l.Units {
		for i := 0; i < len(u.Members); i += folderUnitFiles {
			c := u
			c.Format = FormatFolderGCS
			c.Members = u.Members[i:min(i+folderUnitFiles, len(u.Members))]
			c.FirstIndex, c.Count = u.FirstIndex+i, len(c.Members)
			units = append(units, c)
		}
	}
	l.Units = units
	if err := finishLayout(Spec{Name: "folder", Format: FormatFolderGCS}, &l, opt); err != nil {
		return Layout{}, err
	}
	return l, nil
}

// readFolderPrefix reads a unit's images object by object.
func readFolderPrefix(ctx context.Context, u Unit, emit func(Item) error) error {
	labels := u.labelIndex()
	for _, m := range u.Members {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := storage.Within(u.Path, m)
		if err != nil {
			return fmt.Errorf("datasets: read unit: member %w: the unit list is damaged or forged", err)
		}
		data, err := storage.ReadFile(ctx, p)
		if err != nil {
			return fmt.Errorf("datasets: read unit: %w", err)
		}
		if len(data) > maxImageFile {
			return fmt.Errorf("datasets: read %s: %d bytes, more than the %d allowed for one image", p, len(data), maxImageFile)
		}
		it, err := folderItem(u, labels, m, p, data)
		if err != nil {
			return err
		}
		if err := emit(it); err != nil {
			return err
		}
	}
	return nil
}
