package datasets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/igpt/igpt/internal/storage"
)

// Options tune how a source is read. Inspect copies them into every Unit.
// ImageSize, Channels and OnBad are applied by Decode, to raw pixels as well
// as to encoded images.
type Options struct {
	ImageSize [2]int // required [h, w]; zero = accept any size
	// Channels is 3 (RGB) or 1 (grey); images are converted. 0 means RGB
	// for encoded images and the source's own channels for raw pixels.
	Channels      int
	OnBad         string // "fail" (default) or "skip": what to do with an image that cannot be decoded or has the wrong size
	CIFAR100Label string // "fine" (default) or "coarse"
}

// Validate checks the options' values.
func (o Options) Validate() error {
	var errs []error
	if o.ImageSize[0] < 0 || o.ImageSize[1] < 0 || (o.ImageSize[0] == 0) != (o.ImageSize[1] == 0) {
		errs = append(errs, fmt.Errorf("ImageSize %v: give both [h, w] > 0, or leave both 0 to accept any size", o.ImageSize))
	}
	if o.Channels != 0 && o.Channels != 1 && o.Channels != 3 {
		errs = append(errs, fmt.Errorf("Channels %d: use 3 (RGB), 1 (grey) or 0 (the default, RGB for folders)", o.Channels))
	}
	if o.OnBad != "" && o.OnBad != "fail" && o.OnBad != "skip" {
		errs = append(errs, fmt.Errorf("OnBad %q: use \"fail\" or \"skip\"", o.OnBad))
	}
	if o.CIFAR100Label != "" && o.CIFAR100Label != "fine" && o.CIFAR100Label != "coarse" {
		errs = append(errs, fmt.Errorf("CIFAR100Label %q: use \"fine\" or \"coarse\"", o.CIFAR100Label))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("datasets: bad options: %w", err)
	}
	return nil
}

// Unit is one independently readable piece of a source; the pipeline reads
// units in parallel. It round-trips through encoding/json.
type Unit struct {
	Format string
	Split  string // "train", "test", ... (STL-10: "train", "test", "unlabeled")
	// Path is the file the unit reads: an archive, a directory, or a single
	// file (the idx images file).
	Path string
	// Members are the archive members (or, for a directory source, the files
	// relative to Path) this unit reads, in order; nil for idx, and nil for a
	// tar image folder, meaning every image of the split in archive order.
	// STL-10 units list the images member, then the labels member.
	Members   []string
	LabelPath string // idx: the labels file; "" otherwise
	// Classes are the class names; label = index. The download stage's
	// unit list leaves them out: the units there reference one class table
	// (ClassTable, UseClasses) written once.
	Classes    []string `json:",omitempty"`
	FirstIndex int      // index of the unit's first record within its split (for keys)
	Options    Options

	// Root is, for an image-folder archive, the wrapper directory its
	// <split>/<class>/ tree sits in ("photos/"), or "".
	Root string `json:",omitempty"`
	// Member is, for a unit that is one member of an archive read in place
	// (an ImageNet class tar), that member's name; Offset and Size are the
	// byte range of its data in Path. Size is the file's size otherwise.
	Member string `json:",omitempty"`
	Offset int64  `json:",omitempty"`
	Size   int64  `json:",omitempty"`
	// Class is the class name of a unit that holds one class (ImageNet).
	Class string `json:",omitempty"`
	// RangeStart and RangeEnd cut a flat uncompressed tar into work items
	// (splitTarRange): the unit reads the members whose header starts in
	// [RangeStart, RangeEnd); RangeEnd 0 means the whole file.
	RangeStart int64 `json:",omitempty"`
	RangeEnd   int64 `json:",omitempty"`
	// Zip lists, for a zip read in place (FormatFolderZip), the unit's
	// members as the central directory describes them, in archive order.
	Zip []ZipMember `json:",omitempty"`

	// Count is the number of records Inspect found in the unit (before any
	// image is skipped by Decode); 0 if unknown. ReadUnit checks it.
	Count int `json:",omitempty"`
	// H and W are the size every raw-pixel record of the unit must have
	// (the registry's, e.g. 32×32 for imagenet32); 0 when any.
	H int `json:",omitempty"`
	W int `json:",omitempty"`

	index map[string]int // class name → label, shared through UseClasses
}

// Layout is what Inspect found in a source.
type Layout struct {
	Classes []string
	Units   []Unit
}

// SplitCounts returns the number of records per split, summed over units.
func (l Layout) SplitCounts() map[string]int {
	m := map[string]int{}
	for _, u := range l.Units {
		m[u.Split] += u.Count
	}
	return m
}

// Splits returns the split names of the layout, sorted.
func (l Layout) Splits() []string {
	var s []string
	for _, u := range l.Units {
		if !slices.Contains(s, u.Split) {
			s = append(s, u.Split)
		}
	}
	slices.Sort(s)
	return s
}

// Item is one record as read from a unit: either raw pixels ready to use
// (Pix, H, W, C set) or an encoded image (Encoded set: PNG/JPEG bytes) still
// to be decoded by Decode.
type Item struct {
	Key     string // stable unique key within the dataset: "train/000123", or for folders "train/cat/0001.jpg"
	Split   string
	Label   int    // -1 if none
	Source  string // file (and member) it came from, for error messages
	H, W, C int
	Pix     []byte // HWC
	Encoded []byte
}

// Inspect lists the units and class names of a fetched source. src is a
// local directory holding the dataset's files by Spec.Files names (for mnist:
// the 4 idx .gz files), or a single archive file (cifar-10-binary.tar.gz,
// cifar-100-binary.tar.gz, stl10_binary.tar.gz, or for a folder: a directory
// tree, .tar, .tar.gz/.tgz or .zip). A directory may also hold the extracted
// contents of a CIFAR or STL-10 archive. Inspect reads archives through once,
// so a truncated download is found here rather than in ReadUnit. Errors name
// the file and say what is wrong and what to do.
func Inspect(ctx context.Context, spec Spec, src string, opt Options) (Layout, error) {
	if err := opt.Validate(); err != nil {
		return Layout{}, err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return Layout{}, fmt.Errorf("datasets: inspect %s: %w (fetch the dataset's files first, or check the path)", spec.Name, err)
	}
	log := slog.Default().With("dataset", spec.Name, "src", src)
	var l Layout
	switch spec.Format {
	case FormatCIFAR10, FormatCIFAR100:
		l, err = inspectCIFAR(ctx, spec, src, fi, opt, log)
	case FormatIDX:
		l, err = inspectIDX(ctx, spec, src, fi, opt, log)
	case FormatSTL10:
		l, err = inspectSTL10(ctx, spec, src, fi, opt, log)
	case FormatFolder:
		l, err = inspectFolder(ctx, src, fi, opt, log)
	default:
		return Layout{}, fmt.Errorf("datasets: inspect %s: unknown format %q (known: %s, %s, %s, %s, %s)",
			spec.Name, spec.Format, FormatCIFAR10, FormatCIFAR100, FormatIDX, FormatSTL10, FormatFolder)
	}
	if err != nil {
		return Layout{}, err
	}
	if err := finishLayout(spec, &l, opt); err != nil {
		return Layout{}, err
	}
	checkCounts(spec, l, log)
	return l, nil
}

// finishLayout is the one check of a layout, for every source (Inspect,
// InspectInPlace, InspectFolderPrefix): it gives the units the options and
// the registry's image size, which ReadUnit holds every raw record to
// (checkShape), and refuses two units whose records would have the same
// keys (unitKeySpace: s.tar and s.tar.gz, two dirs holding
// train_data_batch_1.npz).
func finishLayout(spec Spec, l *Layout, opt Options) error {
	seen := map[string]string{}
	for i := range l.Units {
		u := &l.Units[i]
		u.Options = opt
		if spec.H > 0 && spec.W > 0 {
			u.H, u.W = spec.H, spec.W
		}
		ks := unitKeySpace(*u)
		if ks == "" {
			continue
		}
		if prev, dup := seen[ks]; dup {
			return fmt.Errorf("datasets: %s: %s and %s would give records the same keys (%s/…): they hold the same samples under two names? keep one: %w", spec.Name, prev, u.Path, ks, ErrDuplicate)
		}
		seen[ks] = u.Path
	}
	return nil
}

// ErrDuplicate is wrapped by the error for a source that would give two
// records the same key.
var ErrDuplicate = errors.New("duplicate records")

// unitKeySpace is the key prefix of the records of a unit whose keys are
// named after its file ("train/shard-000001" for WebDataset, "train/
// train_data_batch_1" for npz), or "" when keys are unique by construction
// (indices, member paths, ImageNet's class/file). The readers build their
// keys from it.
func unitKeySpace(u Unit) string {
	base := storage.Base(u.Path)
	switch u.Format {
	case FormatWebDataset:
		return u.Split + "/" + strings.SplitN(base, ".", 2)[0]
	case FormatNPZ:
		return u.Split + "/" + strings.TrimSuffix(base, ".npz")
	}
	return ""
}

// checkShape refuses a raw-pixel record whose size is not the unit's (the
// registry's): imagenet32 batches of 8×8 rows, or mixed 16 and 32.
func checkShape(u *Unit, it *Item) error {
	if it.Pix == nil || u.H == 0 || (it.H == u.H && it.W == u.W) {
		return nil
	}
	return fmt.Errorf("datasets: read %s: a %d×%d image, but this dataset's images are %d×%d: is the file from another resolution's release? %w", it.Source, it.H, it.W, u.H, u.W, ErrCorrupt)
}

// checkCounts warns when a split's size differs from the registry's.
func checkCounts(spec Spec, l Layout, log *slog.Logger) {
	if spec.Splits == nil {
		return
	}
	got := l.SplitCounts()
	for split, want := range spec.Splits {
		if got[split] != want {
			log.Warn("datasets: split size differs from the official one", "split", split, "records", got[split], "official", want)
		}
	}
}

// ReadUnit streams a unit's items in order to emit. It stops at the first
// error from emit (returned as is) or from ctx.
//
// The encoded images read into memory count against a budget shared by all
// the units this process reads at once (heldBudget): an image holds its part
// of it until emit returns, so at most that many bytes of encoded images,
// and the decodes emit does, are in flight together.
func ReadUnit(ctx context.Context, u Unit, emit func(Item) error) error {
	ctx, h := withHeld(ctx)
	defer h.release()
	inner := emit
	emit = func(it Item) error {
		defer h.release()
		if err := checkShape(&u, &it); err != nil {
			return err
		}
		return inner(it)
	}
	switch u.Format {
	case FormatCIFAR10, FormatCIFAR100:
		return readCIFARUnit(ctx, u, emit)
	case FormatIDX:
		return readIDXUnit(ctx, u, emit)
	case FormatSTL10:
		return readSTL10Unit(ctx, u, emit)
	case FormatFolder:
		return readFolderUnit(ctx, u, emit)
	case FormatImageNet:
		return readImageNetUnit(ctx, u, emit)
	case FormatWebDataset:
		return readWebDatasetShard(ctx, u, emit)
	case FormatNPZ:
		return readNPZUnit(ctx, u, emit)
	case FormatFolderGCS:
		return readFolderPrefix(ctx, u, emit)
	case FormatFolderZip:
		return readFolderZipInPlace(ctx, u, emit)
	case FormatFolderTar:
		return readFolderTarInPlace(ctx, u, emit)
	}
	return fmt.Errorf("datasets: read unit %s of %s: unknown format %q", u.Split, u.Path, u.Format)
}

// checkCount compares the records a unit produced with Inspect's count.
func checkCount(u Unit, n int) error {
	if u.Count > 0 && n != u.Count {
		return fmt.Errorf("datasets: read %s: split %q unit at index %d gave %d records, but Inspect found %d: the source changed since Inspect; run Inspect again",
			u.Path, u.Split, u.FirstIndex, n, u.Count)
	}
	return nil
}

// indexKey is the key of record i of a split in an indexed format.
func indexKey(split string, i int) string {
	return fmt.Sprintf("%s/%06d", split, i)
}

// isFile reports whether p names a regular file (following links).
func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// ctxReader makes reads fail once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// binSource is a set of named files of a binary-format dataset, found in an
// archive or a directory by base name.
type binSource struct {
	archive string            // the archive, or "" for a directory
	dir     string            // the directory holding the files, or ""
	members map[string]string // base name -> member name (archive) or file name relative to dir
	sizes   map[string]int64  // base name -> size
	texts   map[string][]byte // base name -> contents, for small text files
}

func (b binSource) path() string {
	if b.archive != "" {
		return b.archive
	}
	return b.dir
}

// where names a file of the source for messages.
func (b binSource) where(base string) string {
	if b.archive != "" {
		return b.archive + ": member " + b.members[base]
	}
	return filepath.Join(b.dir, b.members[base])
}

// findBinSource locates a binary dataset's files. src is the archive itself,
// a directory holding the archive (by one of the archives names), or a
// directory holding the extracted files directly or in subdir. match selects
// the data files by base name; texts are small text files to read too.
func findBinSource(ctx context.Context, src string, isDir bool, archives []string, subdir string,
	match func(base string) bool, texts []string, log *slog.Logger) (binSource, error) {
	if isDir {
		for _, a := range archives {
			if p := filepath.Join(src, a); isFile(p) {
				return scanBinArchive(ctx, p, match, texts, log)
			}
		}
		for _, d := range []string{src, filepath.Join(src, subdir)} {
			b, err := scanBinDir(d, match, texts)
			if err != nil {
				return binSource{}, err
			}
			if len(b.members) > len(b.texts) {
				return b, nil
			}
		}
		return binSource{}, fmt.Errorf("datasets: inspect %s: found neither %s nor the extracted %s/ files in it: fetch the dataset first, or give the archive's path",
			src, strings.Join(archives, " or "), subdir)
	}
	return scanBinArchive(ctx, src, match, texts, log)
}

func scanBinDir(dir string, match func(string) bool, texts []string) (binSource, error) {
	b := binSource{dir: dir, members: map[string]string{}, sizes: map[string]int64{}, texts: map[string][]byte{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return b, nil
		}
		return b, fmt.Errorf("datasets: inspect: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		isText := slices.Contains(texts, name)
		if !isText && !match(name) {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		b.members[name] = name
		b.sizes[name] = fi.Size()
		if isText {
			if fi.Size() > maxNamesFile {
				return b, fmt.Errorf("datasets: inspect: %s is %d bytes, too big for a class-name file", filepath.Join(dir, name), fi.Size())
			}
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return b, fmt.Errorf("datasets: inspect: %w", err)
			}
			b.texts[name] = data
		}
	}
	return b, nil
}

func scanBinArchive(ctx context.Context, archive string, match func(string) bool, texts []string, log *slog.Logger) (binSource, error) {
	t, err := openTar(ctx, archive)
	if err != nil {
		return binSource{}, err
	}
	defer t.Close()
	return scanBinTar(ctx, t, match, texts, log)
}

func scanBinTar(ctx context.Context, t *tarStream, match func(string) bool, texts []string, log *slog.Logger) (binSource, error) {
	b := binSource{archive: t.name, members: map[string]string{}, sizes: map[string]int64{}, texts: map[string][]byte{}}
	for {
		if err := ctx.Err(); err != nil {
			return b, err
		}
		hdr, err := t.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return b, err
		}
		if !isRegular(hdr) {
			continue
		}
		name := cleanMember(hdr.Name)
		base := filepath.Base(name)
		if name == "" || strings.HasPrefix(base, ".") {
			continue
		}
		isText := slices.Contains(texts, base)
		if !isText && !match(base) {
			continue
		}
		if prev, dup := b.members[base]; dup {
			return b, fmt.Errorf("datasets: inspect %s: it holds both %s and %s; keep only one (is it the official archive?)", t.name, prev, hdr.Name)
		}
		b.members[base] = hdr.Name
		b.sizes[base] = hdr.Size
		if isText {
			data, err := t.readMember(maxNamesFile)
			if err != nil {
				return b, err
			}
			b.texts[base] = data
		}
	}
	if err := t.drain(log); err != nil {
		return b, err
	}
	return b, nil
}

// openBinMember opens one file of a binary source for reading: a file of a
// directory, or a member of an archive (then the returned tarStream, which
// the caller closes, is positioned at it). It returns the reader, its size,
// a function formatting read errors with the offset reached, and a closer.
func openBinMember(ctx context.Context, u Unit, member string) (io.Reader, int64, func(error) error, io.Closer, error) {
	fi, err := os.Stat(u.Path)
	if err != nil {
		return nil, 0, nil, nil, fmt.Errorf("datasets: read unit: %w", err)
	}
	if fi.IsDir() {
		p, err := storage.Within(u.Path, member)
		if err != nil {
			return nil, 0, nil, nil, fmt.Errorf("datasets: read unit: member %w: the unit list is damaged or forged", err)
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, 0, nil, nil, fmt.Errorf("datasets: read unit: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, nil, nil, fmt.Errorf("datasets: read unit: %w", err)
		}
		cr := &countingReader{r: f}
		errf := func(err error) error { return ioErr(p, fmt.Sprintf("at byte %d of %d", cr.n, st.Size()), err) }
		return cr, st.Size(), errf, f, nil
	}
	t, err := openTar(ctx, u.Path)
	if err != nil {
		return nil, 0, nil, nil, err
	}
	for {
		if err := ctx.Err(); err != nil {
			t.Close()
			return nil, 0, nil, nil, err
		}
		hdr, err := t.next()
		if err == io.EOF {
			t.Close()
			return nil, 0, nil, nil, fmt.Errorf("datasets: read %s: member %s is missing (it was there when Inspect ran?): %w", u.Path, member, ErrCorrupt)
		}
		if err != nil {
			t.Close()
			return nil, 0, nil, nil, err
		}
		if hdr.Name == member && isRegular(hdr) {
			return t.tr, hdr.Size, t.memberErr, t, nil
		}
	}
}
