package datasets

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
)

// idx magic numbers: two zero bytes, the element type (0x08 = unsigned byte)
// and the number of dimensions.
const (
	idxImagesMagic = 0x00000803
	idxLabelsMagic = 0x00000801
	maxIDXPixels   = 1 << 22 // per image
	maxIDXCount    = 1 << 28
)

type idxSplit struct{ split, prefix string }

var idxSplits = []idxSplit{{"train", "train"}, {"test", "t10k"}}

// idxNames lists the accepted file names of an idx file, most usual first.
func idxNames(prefix, kind string, dims int) []string {
	base := fmt.Sprintf("%s-%s-idx%d-ubyte", prefix, kind, dims)
	dotted := fmt.Sprintf("%s-%s.idx%d-ubyte", prefix, kind, dims)
	return []string{base + ".gz", base, dotted + ".gz", dotted}
}

func findFirst(dir string, names []string) string {
	for _, n := range names {
		if p := filepath.Join(dir, n); isFile(p) {
			return p
		}
	}
	return ""
}

// idxHeader reads and checks an idx header: magic and dimensions.
func idxHeader(r io.Reader, magic uint32) ([]int, error) {
	dims := int(magic & 0xff)
	buf := make([]byte, 4+4*dims)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("reading the %d-byte header: %w", len(buf), err)
	}
	if got := binary.BigEndian.Uint32(buf); got != magic {
		return nil, fmt.Errorf("magic number 0x%08x, want 0x%08x (is it the right file, and not an HTML error page?): %w", got, magic, ErrCorrupt)
	}
	d := make([]int, dims)
	for i := range d {
		v := binary.BigEndian.Uint32(buf[4+4*i:])
		if v > maxIDXCount {
			return nil, fmt.Errorf("dimension %d is %d, too large: %w", i, v, ErrCorrupt)
		}
		d[i] = int(v)
	}
	return d, nil
}

// openIDX opens an idx file (gzipped or not) and reads its header.
func openIDX(ctx context.Context, p string, magic uint32) (*stream, []int, error) {
	s, err := openStream(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	d, err := checkIDX(s, magic)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, d, nil
}

// checkIDX reads and checks the header of an idx stream.
func checkIDX(s *stream, magic uint32) ([]int, error) {
	d, err := idxHeader(s, magic)
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return nil, fmt.Errorf("datasets: read %s: %w", s.name, err)
		}
		return nil, ioErr(s.name, "", err)
	}
	if magic == idxImagesMagic && (d[1] == 0 || d[2] == 0 || d[1]*d[2] > maxIDXPixels) {
		return nil, fmt.Errorf("datasets: read %s: image size %d×%d is not supported: %w", s.name, d[1], d[2], ErrCorrupt)
	}
	return d, nil
}

func inspectIDX(ctx context.Context, spec Spec, src string, fi os.FileInfo, opt Options, log *slog.Logger) (Layout, error) {
	if !fi.IsDir() {
		return Layout{}, fmt.Errorf("datasets: inspect %s: %s is a file; give the directory holding the idx files (%s, …)",
			spec.Name, src, idxNames("train", "images", 3)[0])
	}
	l := Layout{Classes: spec.Classes}
	maxLabel := -1
	for _, sp := range idxSplits {
		if err := ctx.Err(); err != nil {
			return Layout{}, err
		}
		images := findFirst(src, idxNames(sp.prefix, "images", 3))
		labels := findFirst(src, idxNames(sp.prefix, "labels", 1))
		if images == "" && labels == "" {
			continue
		}
		if images == "" || labels == "" {
			missing := idxNames(sp.prefix, "images", 3)[0]
			if labels == "" {
				missing = idxNames(sp.prefix, "labels", 1)[0]
			}
			return Layout{}, fmt.Errorf("datasets: inspect %s: %s is missing from %s: fetch it", spec.Name, missing, src)
		}
		is, idim, err := openIDX(ctx, images, idxImagesMagic)
		if err != nil {
			return Layout{}, err
		}
		is.Close()
		ls, ldim, err := openIDX(ctx, labels, idxLabelsMagic)
		if err != nil {
			return Layout{}, err
		}
		if l.Classes == nil {
			// No fixed class names: find the largest label.
			n, err := maxByte(ctx, ls)
			if err != nil {
				ls.Close()
				return Layout{}, ioErr(labels, "", err)
			}
			maxLabel = max(maxLabel, n)
		}
		ls.Close()
		if idim[0] != ldim[0] {
			return Layout{}, fmt.Errorf("datasets: inspect %s: %s holds %d images but %s holds %d labels: %w", spec.Name, images, idim[0], labels, ldim[0], ErrCorrupt)
		}
		if spec.H > 0 && (idim[1] != spec.H || idim[2] != spec.W) {
			return Layout{}, fmt.Errorf("datasets: inspect %s: %s holds %d×%d images, want %d×%d: is it the right dataset?", spec.Name, images, idim[1], idim[2], spec.H, spec.W)
		}
		if idim[0] == 0 {
			return Layout{}, fmt.Errorf("datasets: inspect %s: %s holds no images", spec.Name, images)
		}
		l.Units = append(l.Units, Unit{
			Format:    FormatIDX,
			Split:     sp.split,
			Path:      images,
			LabelPath: labels,
			Count:     idim[0],
		})
	}
	if len(l.Units) == 0 {
		return Layout{}, fmt.Errorf("datasets: inspect %s: no idx files in %s (want %s and %s, …): fetch them first",
			spec.Name, src, idxNames("train", "images", 3)[0], idxNames("train", "labels", 1)[0])
	}
	if l.Classes == nil {
		for i := 0; i <= maxLabel; i++ {
			l.Classes = append(l.Classes, strconv.Itoa(i))
		}
	}
	for i := range l.Units {
		l.Units[i].Classes = l.Classes
	}
	return l, nil
}

func maxByte(ctx context.Context, r io.Reader) (int, error) {
	buf := make([]byte, 32<<10)
	m := -1
	for {
		if err := ctx.Err(); err != nil {
			return m, err
		}
		n, err := r.Read(buf)
		for _, b := range buf[:n] {
			m = max(m, int(b))
		}
		if err == io.EOF {
			return m, nil
		}
		if err != nil {
			return m, err
		}
	}
}

func readIDXUnit(ctx context.Context, u Unit, emit func(Item) error) error {
	is, idim, err := openIDX(ctx, u.Path, idxImagesMagic)
	if err != nil {
		return err
	}
	defer is.Close()
	ls, ldim, err := openIDX(ctx, u.LabelPath, idxLabelsMagic)
	if err != nil {
		return err
	}
	defer ls.Close()
	n, err := readIDXStreams(ctx, u, is, idim, ls, ldim, emit)
	if err != nil {
		return err
	}
	return checkCount(u, n)
}

// readIDXStreams reads the records of an images and a labels stream whose
// headers have been read.
func readIDXStreams(ctx context.Context, u Unit, is *stream, idim []int, ls *stream, ldim []int, emit func(Item) error) (int, error) {
	if idim[0] != ldim[0] {
		return 0, fmt.Errorf("datasets: read %s: %d images but %s holds %d labels: %w", is.name, idim[0], ls.name, ldim[0], ErrCorrupt)
	}
	cfg := idxConfig{images: is.name, labels: ls.name, split: u.Split, first: u.FirstIndex, n: idim[0], rows: idim[1], cols: idim[2], classes: len(u.Classes)}
	return readIDXRecords(ctx, is, ls, cfg, emit)
}

type idxConfig struct {
	images, labels string // file names for messages
	split          string
	first          int
	n, rows, cols  int
	classes        int
}

// readIDXRecords reads cfg.n images and labels (after the headers) and then
// checks both files end there.
func readIDXRecords(ctx context.Context, images, labels io.Reader, cfg idxConfig, emit func(Item) error) (int, error) {
	size := cfg.rows * cfg.cols
	const imgHdr, lblHdr = 16, 8
	lbl := make([]byte, 1)
	for i := range cfg.n {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return i, err
			}
		}
		pix := make([]byte, size)
		if _, err := io.ReadFull(images, pix); err != nil {
			return i, ioErr(cfg.images, fmt.Sprintf("image %d of %d at uncompressed byte %d", i, cfg.n, imgHdr+i*size), err)
		}
		if _, err := io.ReadFull(labels, lbl); err != nil {
			return i, ioErr(cfg.labels, fmt.Sprintf("label %d of %d at uncompressed byte %d", i, cfg.n, lblHdr+i), err)
		}
		source := fmt.Sprintf("%s@image %d (offset %d)", cfg.images, i, imgHdr+i*size)
		if err := checkLabel(fmt.Sprintf("%s: label of image %d", cfg.labels, i), int64(lbl[0]), 0, cfg.classes); err != nil {
			return i, err
		}
		it := Item{
			Key:    indexKey(cfg.split, cfg.first+i),
			Split:  cfg.split,
			Label:  int(lbl[0]),
			Source: source,
			H:      cfg.rows, W: cfg.cols, C: 1,
			Pix: pix,
		}
		if err := emit(it); err != nil {
			return i, err
		}
	}
	// Both files must end here; reading to the end also checks gzip CRCs.
	for _, f := range []struct {
		name string
		r    io.Reader
		off  int
	}{{cfg.images, images, imgHdr + cfg.n*size}, {cfg.labels, labels, lblHdr + cfg.n}} {
		n, err := io.Copy(io.Discard, io.LimitReader(f.r, 1<<20))
		if err != nil {
			return cfg.n, ioErr(f.name, fmt.Sprintf("after the last record at uncompressed byte %d", f.off+int(n)), err)
		}
		if n > 0 {
			return cfg.n, fmt.Errorf("datasets: read %s: %d bytes or more after the %d records its header announces: %w", f.name, n, cfg.n, ErrCorrupt)
		}
	}
	return cfg.n, nil
}
