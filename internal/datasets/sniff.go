package datasets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// SourceKind is what a local dataset source holds, as Sniff finds it from
// its names alone (no image is decoded).
type SourceKind struct {
	// Archive is set for a file (tar, tar.gz or zip) rather than a folder.
	Archive bool
	// Folder: images laid out as [<wrapper>/]<split>/<class>/<image>.
	Folder bool
	// Format is the binary format whose files it holds (FormatCIFAR10,
	// FormatCIFAR100, FormatSTL10, FormatIDX), "" when none.
	Format string
}

// String describes the kind for messages.
func (k SourceKind) String() string {
	what := "a folder"
	if k.Archive {
		what = "an archive"
	}
	switch {
	case k.Format != "":
		return fmt.Sprintf("%s of %s files", what, k.Format)
	case k.Folder:
		return what + " of images (<split>/<class>/<image>)"
	}
	return what + " that no reader recognises"
}

// DatasetNames returns the registered datasets whose reader fits the
// source: those of its binary format, or "folder" for an image folder.
func (k SourceKind) DatasetNames() []string {
	format := k.Format
	if format == "" && k.Folder {
		format = FormatFolder
	}
	var names []string
	for name, s := range registry {
		if format != "" && s.Format == format {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// sniffLimit is how many names Sniff looks at: enough to see a binary
// dataset's files or a few class folders, without reading a large archive
// through.
const sniffLimit = 4096

var (
	idxName  = regexp.MustCompile(`[-.]idx[0-9]-ubyte(\.gz)?$`)
	stl10Bin = regexp.MustCompile(`^(train|test|unlabeled)_X\.bin$`)
)

// binaryFormat names the binary format a file's base name belongs to.
func binaryFormat(base string) string {
	switch {
	case base == "test_batch.bin" || cifar10Batch.MatchString(base):
		return FormatCIFAR10
	case base == "train.bin" || base == "test.bin":
		return FormatCIFAR100
	case stl10Bin.MatchString(base):
		return FormatSTL10
	case idxName.MatchString(base):
		return FormatIDX
	}
	return ""
}

// Sniff tells what the local source src is: a folder or an archive (tar,
// tar.gz, zip), holding an image-folder tree or a binary dataset's files.
// It looks at the first names only. A file that is no archive comes back
// as Archive with neither Folder nor Format.
func Sniff(ctx context.Context, src string) (SourceKind, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return SourceKind{}, fmt.Errorf("datasets: dataset source: %w", err)
	}
	var names []string
	if fi.IsDir() {
		names, err = dirNames(ctx, src)
	} else {
		names, err = archiveNames(ctx, src)
	}
	if err != nil {
		return SourceKind{}, err
	}
	k := classifyNames(names)
	k.Archive = !fi.IsDir()
	if k.Archive && k.Format == "" && !k.Folder {
		k.Format = binaryFormat(filepath.Base(src)) // a single idx file
	}
	return k, nil
}

// classifyNames finds a binary format's file among names, else images at
// least three levels deep (split/class/image).
func classifyNames(names []string) SourceKind {
	var k SourceKind
	for _, n := range names {
		if f := binaryFormat(path.Base(n)); f != "" {
			return SourceKind{Format: f}
		}
		if isImageName(n) && !hiddenPath(n) && strings.Count(n, "/") >= 2 {
			k.Folder = true
		}
	}
	return k
}

var errEnough = errors.New("enough names")

// dirNames lists up to sniffLimit paths under dir, relative, with "/".
func dirNames(ctx context.Context, dir string) ([]string, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("datasets: dataset source: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if rel, rerr := filepath.Rel(dir, p); rerr == nil && rel != "." {
			names = append(names, filepath.ToSlash(rel))
		}
		if len(names) >= sniffLimit {
			return errEnough
		}
		return nil
	})
	if err == errEnough {
		err = nil
	}
	return names, err
}

// archiveNames lists up to sniffLimit member names of a zip or tar(.gz)
// file; a file that is neither gives no names and no error.
func archiveNames(ctx context.Context, p string) ([]string, error) {
	kind, err := archiveKind(p)
	if err != nil {
		return nil, err
	}
	var names []string
	if kind == "zip" {
		zr, err := openZip(p)
		if err != nil {
			return nil, nil
		}
		defer zr.Close()
		for _, f := range zr.File {
			if names = append(names, cleanMember(f.Name)); len(names) >= sniffLimit {
				break
			}
		}
		return names, nil
	}
	t, err := openTar(ctx, p)
	if err != nil {
		return nil, nil
	}
	defer t.Close()
	for len(names) < sniffLimit {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := t.next()
		if err == io.EOF || err != nil {
			break // not a tar, or damaged: Inspect says which
		}
		names = append(names, cleanMember(hdr.Name))
	}
	return names, nil
}
