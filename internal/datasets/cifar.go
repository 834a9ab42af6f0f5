package datasets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

const (
	cifarSide   = 32
	cifarPixels = cifarSide * cifarSide * 3
)

var cifar10Batch = regexp.MustCompile(`^data_batch_([0-9]+)\.bin$`)

// cifarRecSize is the record size of a CIFAR binary format.
func cifarRecSize(format string) int {
	if format == FormatCIFAR100 {
		return 2 + cifarPixels
	}
	return 1 + cifarPixels
}

func inspectCIFAR(ctx context.Context, spec Spec, src string, fi os.FileInfo, opt Options, log *slog.Logger) (Layout, error) {
	var (
		archives = []string{"cifar-10-binary.tar.gz"}
		subdir   = "cifar-10-batches-bin"
		texts    = []string{"batches.meta.txt"}
		match    = func(b string) bool { return b == "test_batch.bin" || cifar10Batch.MatchString(b) }
	)
	if spec.Format == FormatCIFAR100 {
		archives = []string{"cifar-100-binary.tar.gz"}
		subdir = "cifar-100-binary"
		texts = []string{"fine_label_names.txt", "coarse_label_names.txt"}
		match = func(b string) bool { return b == "train.bin" || b == "test.bin" }
	}
	for _, f := range spec.Files {
		if !slices.Contains(archives, f.Name) {
			archives = append([]string{f.Name}, archives...)
		}
	}
	b, err := findBinSource(ctx, src, fi.IsDir(), archives, subdir, match, texts, log)
	if err != nil {
		return Layout{}, err
	}

	classes, err := cifarClasses(spec, opt, b, log)
	if err != nil {
		return Layout{}, err
	}
	batches, err := cifarBatches(b)
	if err != nil {
		return Layout{}, err
	}
	rec := int64(cifarRecSize(spec.Format))
	l := Layout{Classes: classes}
	next := map[string]int{}
	for _, bt := range batches {
		size := b.sizes[bt.base]
		if size == 0 || size%rec != 0 {
			return Layout{}, fmt.Errorf("datasets: inspect %s: %s is %d bytes, not a whole number of %d-byte records (%d records and %d bytes over): %w",
				b.path(), b.where(bt.base), size, rec, size/rec, size%rec, ErrCorrupt)
		}
		n := int(size / rec)
		l.Units = append(l.Units, Unit{
			Format:     spec.Format,
			Split:      bt.split,
			Path:       b.path(),
			Members:    []string{b.members[bt.base]},
			Classes:    classes,
			FirstIndex: next[bt.split],
			Count:      n,
		})
		next[bt.split] += n
	}
	return l, nil
}

// cifarClasses reads the class names from the source's names file (for
// CIFAR-100 the fine or coarse one, as opt says).
func cifarClasses(spec Spec, opt Options, b binSource, log *slog.Logger) ([]string, error) {
	namesFile := "batches.meta.txt"
	if spec.Format == FormatCIFAR100 {
		namesFile = "fine_label_names.txt"
		if opt.CIFAR100Label == "coarse" {
			namesFile = "coarse_label_names.txt"
		}
	}
	if data, ok := b.texts[namesFile]; ok {
		classes, err := readNames(b.where(namesFile), data)
		if err != nil {
			return nil, err
		}
		if len(classes) == 0 {
			return nil, fmt.Errorf("datasets: inspect %s: %s has no class names: %w", b.path(), b.where(namesFile), ErrCorrupt)
		}
		return classes, nil
	}
	if spec.Format == FormatCIFAR10 {
		log.Warn("datasets: no batches.meta.txt; using the standard CIFAR-10 class names")
		if spec.Classes != nil {
			return spec.Classes, nil
		}
		return cifar10Classes, nil
	}
	return nil, fmt.Errorf("datasets: inspect %s: %s is missing: is it the official cifar-100-binary archive?", b.path(), namesFile)
}

// cifarBatch is one data file of a CIFAR source.
type cifarBatch struct {
	base  string
	split string
	order int
}

// cifarBatches lists the source's data files in split order: train
// batches by number, then test.
func cifarBatches(b binSource) ([]cifarBatch, error) {
	var batches []cifarBatch
	for base := range b.members {
		switch {
		case base == "test_batch.bin" || base == "test.bin":
			batches = append(batches, cifarBatch{base, "test", 0})
		case base == "train.bin":
			batches = append(batches, cifarBatch{base, "train", 0})
		default:
			if m := cifar10Batch.FindStringSubmatch(base); m != nil {
				n, err := strconv.Atoi(m[1])
				if err != nil {
					n = 1 << 30
				}
				batches = append(batches, cifarBatch{base, "train", n})
			}
		}
	}
	if len(batches) == 0 {
		return nil, fmt.Errorf("datasets: inspect %s: no CIFAR batch files in it: is it the right dataset?", b.path())
	}
	slices.SortFunc(batches, func(x, y cifarBatch) int {
		if x.split != y.split {
			return strings.Compare(y.split, x.split) // train before test
		}
		return x.order - y.order
	})
	return batches, nil
}

func readCIFARUnit(ctx context.Context, u Unit, emit func(Item) error) error {
	if len(u.Members) != 1 {
		return fmt.Errorf("datasets: read unit %s of %s: a CIFAR unit reads one batch file, not %d", u.Split, u.Path, len(u.Members))
	}
	member := u.Members[0]
	r, size, errf, c, err := openBinMember(ctx, u, member)
	if err != nil {
		return err
	}
	defer c.Close()
	rec := int64(cifarRecSize(u.Format))
	src := u.Path + ":" + member
	if fi, err := os.Stat(u.Path); err == nil && fi.IsDir() {
		src = filepath.Join(u.Path, member)
	}
	if size%rec != 0 {
		return fmt.Errorf("datasets: read %s: %d bytes is not a whole number of %d-byte records: %w", src, size, rec, ErrCorrupt)
	}
	cfg := cifarConfig{source: src, split: u.Split, first: u.FirstIndex, format: u.Format, fine: u.Options.CIFAR100Label != "coarse", classes: len(u.Classes)}
	n, err := readCIFARRecords(ctx, r, cfg, errf, emit)
	if err != nil {
		return err
	}
	if int64(n) != size/rec {
		return errf(io.ErrUnexpectedEOF)
	}
	return checkCount(u, n)
}

type cifarConfig struct {
	source  string // for Item.Source
	split   string
	first   int
	format  string
	fine    bool // CIFAR-100: fine label (else coarse)
	classes int  // labels must be below this
}

// readFixedRecords reads records of size bytes from r until EOF and passes
// each, with its index, to fn (buf is reused). A partial last record goes
// through errf, naming the record (what) that is cut short; ctx is checked
// every `every` records.
func readFixedRecords(ctx context.Context, r io.Reader, size, every int, what string, errf func(error) error, fn func(i int, buf []byte) error) (int, error) {
	buf := make([]byte, size)
	for i := 0; ; i++ {
		if i%every == 0 {
			if err := ctx.Err(); err != nil {
				return i, err
			}
		}
		_, err := io.ReadFull(r, buf)
		if err == io.EOF {
			return i, nil
		}
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return i, err
			}
			return i, errf(fmt.Errorf("%s %d: %w", what, i, err))
		}
		if err := fn(i, buf); err != nil {
			return i, err
		}
	}
}

// readCIFARRecords reads whole CIFAR records from r until EOF and emits
// them. Read errors go through errf; a partial last record is an error.
func readCIFARRecords(ctx context.Context, r io.Reader, cfg cifarConfig, errf func(error) error, emit func(Item) error) (int, error) {
	rec := cifarRecSize(cfg.format)
	labelAt, pixAt := 0, 1
	if cfg.format == FormatCIFAR100 {
		pixAt = 2
		if cfg.fine {
			labelAt = 1
		}
	}
	const plane = cifarSide * cifarSide
	return readFixedRecords(ctx, r, rec, 64, "record", errf, func(i int, buf []byte) error {
		source := fmt.Sprintf("%s@record %d (offset %d)", cfg.source, i, i*rec)
		label := int(buf[labelAt])
		if err := checkLabel(source, int64(label), 0, cfg.classes); err != nil {
			return err
		}
		pix := make([]byte, cifarPixels)
		p := buf[pixAt:]
		for j := range plane {
			pix[3*j] = p[j]
			pix[3*j+1] = p[plane+j]
			pix[3*j+2] = p[2*plane+j]
		}
		it := Item{
			Key:    indexKey(cfg.split, cfg.first+i),
			Split:  cfg.split,
			Label:  label,
			Source: source,
			H:      cifarSide, W: cifarSide, C: 3,
			Pix: pix,
		}
		return emit(it)
	})
}
