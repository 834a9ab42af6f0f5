package datasets

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
)

const (
	stlSide   = 96
	stlPlane  = stlSide * stlSide
	stlRecord = 3 * stlPlane
)

var stlSplits = []string{"train", "test", "unlabeled"}

func inspectSTL10(ctx context.Context, spec Spec, src string, fi os.FileInfo, opt Options, log *slog.Logger) (Layout, error) {
	archives := []string{"stl10_binary.tar.gz"}
	for _, f := range spec.Files {
		if !slices.Contains(archives, f.Name) {
			archives = append([]string{f.Name}, archives...)
		}
	}
	match := func(b string) bool {
		for _, s := range stlSplits {
			if b == s+"_X.bin" || b == s+"_y.bin" {
				return true
			}
		}
		return false
	}
	b, err := findBinSource(ctx, src, fi.IsDir(), archives, "stl10_binary", match, []string{"class_names.txt"}, log)
	if err != nil {
		return Layout{}, err
	}
	classes := spec.Classes
	if data, ok := b.texts["class_names.txt"]; ok {
		if classes, err = readNames(b.where("class_names.txt"), data); err != nil {
			return Layout{}, err
		}
	}
	if len(classes) == 0 {
		classes = stl10Classes
		log.Warn("datasets: no class_names.txt; using the standard STL-10 class names")
	}
	l := Layout{Classes: classes}
	for _, split := range stlSplits {
		x, y := split+"_X.bin", split+"_y.bin"
		if _, ok := b.members[x]; !ok {
			if _, ok := b.members[y]; ok {
				return Layout{}, fmt.Errorf("datasets: inspect %s: it has %s but not %s: %w", b.path(), y, x, ErrCorrupt)
			}
			continue
		}
		size := b.sizes[x]
		if size == 0 || size%stlRecord != 0 {
			return Layout{}, fmt.Errorf("datasets: inspect %s: %s is %d bytes, not a whole number of %d-byte 96×96×3 images (%d images and %d bytes over): %w",
				b.path(), b.where(x), size, stlRecord, size/stlRecord, size%stlRecord, ErrCorrupt)
		}
		n := int(size / stlRecord)
		members := []string{b.members[x]}
		if _, ok := b.members[y]; ok {
			if b.sizes[y] != int64(n) {
				return Layout{}, fmt.Errorf("datasets: inspect %s: %s holds %d labels but %s holds %d images: %w", b.path(), b.where(y), b.sizes[y], x, n, ErrCorrupt)
			}
			members = append(members, b.members[y])
		} else if split != "unlabeled" {
			return Layout{}, fmt.Errorf("datasets: inspect %s: %s has no labels file %s: %w", b.path(), x, y, ErrCorrupt)
		}
		l.Units = append(l.Units, Unit{
			Format:  FormatSTL10,
			Split:   split,
			Path:    b.path(),
			Members: members,
			Classes: classes,
			Count:   n,
		})
	}
	if len(l.Units) == 0 {
		return Layout{}, fmt.Errorf("datasets: inspect %s: no STL-10 image files (train_X.bin, …) in it: is it the right dataset?", b.path())
	}
	return l, nil
}

// readSTLLabels reads a whole labels member.
func readSTLLabels(ctx context.Context, u Unit, member string) ([]byte, error) {
	r, size, errf, c, err := openBinMember(ctx, u, member)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if size > maxIDXCount {
		return nil, fmt.Errorf("datasets: read %s: labels member %s is %d bytes, too large: %w", u.Path, member, size, ErrCorrupt)
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, errf(err)
	}
	return buf, nil
}

func readSTL10Unit(ctx context.Context, u Unit, emit func(Item) error) error {
	if len(u.Members) < 1 || len(u.Members) > 2 {
		return fmt.Errorf("datasets: read unit %s of %s: an STL-10 unit reads an images file and maybe a labels file, not %d files", u.Split, u.Path, len(u.Members))
	}
	var labels []byte
	if len(u.Members) == 2 {
		var err error
		if labels, err = readSTLLabels(ctx, u, u.Members[1]); err != nil {
			return err
		}
	}
	r, size, errf, c, err := openBinMember(ctx, u, u.Members[0])
	if err != nil {
		return err
	}
	defer c.Close()
	src := u.Path + ":" + u.Members[0]
	if fi, err := os.Stat(u.Path); err == nil && fi.IsDir() {
		src = filepath.Join(u.Path, u.Members[0])
	}
	if size%stlRecord != 0 {
		return fmt.Errorf("datasets: read %s: %d bytes is not a whole number of %d-byte images: %w", src, size, stlRecord, ErrCorrupt)
	}
	if labels != nil && int64(len(labels)) != size/stlRecord {
		return fmt.Errorf("datasets: read %s: %d images but %d labels in %s: %w", src, size/stlRecord, len(labels), u.Members[1], ErrCorrupt)
	}
	cfg := stlConfig{source: src, split: u.Split, first: u.FirstIndex, classes: len(u.Classes), labels: labels}
	n, err := readSTLRecords(ctx, r, cfg, errf, emit)
	if err != nil {
		return err
	}
	if int64(n) != size/stlRecord {
		return errf(io.ErrUnexpectedEOF)
	}
	return checkCount(u, n)
}

type stlConfig struct {
	source  string
	split   string
	first   int
	classes int
	labels  []byte // nil: unlabeled (label -1)
}

// readSTLRecords reads 96×96×3 images stored as three column-major planes
// until EOF and emits them in HWC order.
func readSTLRecords(ctx context.Context, r io.Reader, cfg stlConfig, errf func(error) error, emit func(Item) error) (int, error) {
	return readFixedRecords(ctx, r, stlRecord, 16, "image", errf, func(i int, buf []byte) error {
		source := fmt.Sprintf("%s@image %d (offset %d)", cfg.source, i, i*stlRecord)
		label := -1
		if cfg.labels != nil {
			if i >= len(cfg.labels) {
				return fmt.Errorf("datasets: read %s: more images than the %d labels: %w", source, len(cfg.labels), ErrCorrupt)
			}
			l := int(cfg.labels[i])
			if err := checkLabel(source, int64(l), 1, cfg.classes); err != nil {
				return err
			}
			label = l - 1
		}
		pix := make([]byte, stlRecord)
		for c := range 3 {
			plane := buf[c*stlPlane : (c+1)*stlPlane]
			for x := range stlSide {
				col := plane[x*stlSide : (x+1)*stlSide]
				for y, v := range col {
					pix[(y*stlSide+x)*3+c] = v
				}
			}
		}
		it := Item{
			Key:    indexKey(cfg.split, cfg.first+i),
			Split:  cfg.split,
			Label:  label,
			Source: source,
			H:      stlSide, W: stlSide, C: 3,
			Pix: pix,
		}
		return emit(it)
	})
}
