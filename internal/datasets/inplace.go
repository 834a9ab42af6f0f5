package datasets

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/igpt/igpt/internal/storage"
)

// Sources read in place: the launcher lists their files (names and sizes,
// plus the 512-byte headers of an archive of archives) and never reads an
// image; each unit is one source shard that a worker streams from local disk
// or gs:// with range reads.
const (
	// FormatImageNet is the official ILSVRC2012 release: a train tar holding
	// one tar per class (n01440764.tar, …), a flat validation tar and a
	// validation labels file.
	FormatImageNet = "imagenet"
	// FormatWebDataset is a set of tar shards holding samples as members
	// that share a key: 000123.jpg + 000123.cls.
	FormatWebDataset = "webdataset"
	// FormatNPZ is the downsampled ImageNet of Chrabaszcz et al. (2017):
	// numpy .npz batch files with data (N × 3·S·S, planar RGB) and labels
	// (1 … 1000).
	FormatNPZ = "npz"
)

// ReadsInPlace reports whether a format's source is read by the workers
// where it lies, so the launcher must only list it.
func ReadsInPlace(format string) bool {
	switch format {
	case FormatImageNet, FormatWebDataset, FormatNPZ, FormatFolderGCS, FormatFolderZip, FormatFolderTar:
		return true
	}
	return false
}

// ImageNet's file names, as published.
const (
	ImageNetTrainTar = "ILSVRC2012_img_train.tar"
	ImageNetValTar   = "ILSVRC2012_img_val.tar"
)

// imageNetValLabels are the validation label files accepted, in order of
// preference: one wnid a line in file-name order (TFDS's layout), or
// Kaggle's CSV (ImageId,PredictionString).
var imageNetValLabels = []string{"validation_labels.txt", "imagenet2012_validation_labels.txt", "LOC_val_solution.csv"}

// InspectInPlace lists the units of a source read in place. src is a
// folder, gs:// prefix, file or glob pattern; splits optionally maps split
// names to their own patterns (WebDataset).
func InspectInPlace(ctx context.Context, spec Spec, src string, splits map[string]string, opt Options) (Layout, error) {
	if err := opt.Validate(); err != nil {
		return Layout{}, err
	}
	var l Layout
	var err error
	switch spec.Format {
	case FormatImageNet:
		l, err = inspectImageNet(ctx, src)
	case FormatWebDataset:
		l, err = inspectWebDataset(ctx, src, splits)
	case FormatNPZ:
		l, err = inspectNPZ(ctx, spec, src)
	default:
		return Layout{}, fmt.Errorf("datasets: %s is not read in place (format %q)", spec.Name, spec.Format)
	}
	if err != nil {
		return Layout{}, err
	}
	if err := finishLayout(spec, &l, opt); err != nil {
		return Layout{}, err
	}
	return l, nil
}

// sourceFiles lists what src names: the files of a folder or prefix, the
// matches of a pattern, or the one file.
func sourceFiles(ctx context.Context, src string) ([]storage.ObjectInfo, error) {
	if strings.ContainsAny(storage.Base(src), "*?[{") {
		return storage.Glob(ctx, src)
	}
	if size, err := storage.Size(ctx, src); err == nil && !isLocalDir(src) {
		return []storage.ObjectInfo{{Path: src, Size: size}}, nil
	}
	files, err := storage.ListSizes(ctx, strings.TrimSuffix(src, "/")+"/")
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("datasets: %s: no such file, folder or prefix (or it is empty)", src)
	}
	return files, nil
}

func isLocalDir(p string) bool {
	if storage.IsGCS(p) {
		return false
	}
	return !isFile(p)
}

// findByBase returns the first listed file whose base name is one of names.
func findByBase(files []storage.ObjectInfo, names ...string) (storage.ObjectInfo, bool) {
	for _, n := range names {
		for _, f := range files {
			if storage.Base(f.Path) == n {
				return f, true
			}
		}
	}
	return storage.ObjectInfo{}, false
}

// inspectImageNet finds the train tar of class tars (one unit per class,
// located by walking the outer tar's headers) and the validation tar.
func inspectImageNet(ctx context.Context, src string) (Layout, error) {
	files, err := sourceFiles(ctx, src)
	if err != nil {
		return Layout{}, err
	}
	train, ok := findByBase(files, ImageNetTrainTar)
	if !ok && len(files) == 1 && strings.HasSuffix(files[0].Path, ".tar") {
		train, ok = files[0], true
	}
	if !ok {
		return Layout{}, fmt.Errorf("datasets: imagenet: %s holds no %s: point dataset.source at the folder or gs:// prefix holding the official files", src, ImageNetTrainTar)
	}
	l, err := listClassTars(ctx, train)
	if err != nil {
		return Layout{}, err
	}
	val, ok := findByBase(files, ImageNetValTar)
	if !ok {
		return l, nil
	}
	labels, ok := findByBase(files, imageNetValLabels...)
	if !ok {
		return Layout{}, fmt.Errorf("datasets: imagenet: %s has %s but no labels file (%s): put one beside it",
			src, ImageNetValTar, strings.Join(imageNetValLabels, " or "))
	}
	// The validation tar (50,000 images, 6.4 GB) is cut into byte ranges:
	// one unit each, read in place by the workers.
	vu := Unit{Format: FormatImageNet, Split: "test", Path: val.Path, Size: val.Size, LabelPath: labels.Path, Classes: l.Classes}
	if strings.HasSuffix(val.Path, ".tar") {
		l.Units = append(l.Units, splitTarRange(vu, val.Size)...)
	} else {
		l.Units = append(l.Units, vu)
	}
	return l, nil
}

// walkTarHeaders walks the headers of the uncompressed tar at p through
// ranged reads, never reading a member's data (tar skips data by seeking;
// it reads the last byte of each member to check it is there): fn gets
// each header, the offset where the member's header chain starts (its
// first header, PAX or long-name blocks included: what eachTarRangeImage
// cuts ranges by) and the offset of its data. One ranged read per header:
// cheap for the thousand class tars of ImageNet's train tar, slow for
// millions of members on GCS.
func walkTarHeaders(ctx context.Context, p string, fn func(hdr *tar.Header, chain, data int64) error) error {
	ra, err := storage.OpenReaderAt(ctx, p)
	if err != nil {
		return err
	}
	defer ra.Close()
	ra.NoCache() // read the headers only, never a member's data
	sr := io.NewSectionReader(ra, 0, ra.Size())
	tr := tar.NewReader(sr)
	var chain int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return corrupt(p, fmt.Sprintf("reading the header that starts at byte %d", chain), err)
		}
		data, _ := sr.Seek(0, io.SeekCurrent)
		if err := fn(hdr, chain, data); err != nil {
			return err
		}
		chain = data + (hdr.Size+511)&^511
	}
}

// listClassTars walks the headers of the outer train tar: one unit per
// member tar, with the byte range of its data. Only headers are read.
func listClassTars(ctx context.Context, train storage.ObjectInfo) (Layout, error) {
	var l Layout
	err := walkTarHeaders(ctx, train.Path, func(hdr *tar.Header, _, off int64) error {
		if !isRegular(hdr) {
			return nil
		}
		name, err := memberName(train.Path, hdr.Name)
		if err != nil {
			return err
		}
		if name == "" || hiddenPath(name) {
			return nil
		}
		if !strings.HasSuffix(name, ".tar") {
			return fmt.Errorf("datasets: imagenet: %s: member %s is not a class tar (want n01440764.tar, …): is this %s?", train.Path, hdr.Name, ImageNetTrainTar)
		}
		class := strings.TrimSuffix(path.Base(name), ".tar")
		l.Classes = append(l.Classes, class)
		l.Units = append(l.Units, Unit{Format: FormatImageNet, Split: "train", Path: train.Path, Member: name, Offset: off, Size: hdr.Size, Class: class})
		return nil
	})
	if err != nil {
		return Layout{}, err
	}
	if len(l.Units) == 0 {
		return Layout{}, corrupt(train.Path, "", errors.New("no class tars in it"))
	}
	slices.Sort(l.Classes)
	if i := firstDup(l.Classes); i >= 0 {
		return Layout{}, fmt.Errorf("datasets: imagenet: %s holds class %s twice", train.Path, l.Classes[i])
	}
	if _, err := normalizeClasses("imagenet "+train.Path, l.Classes); err != nil {
		return Layout{}, err
	}
	slices.SortFunc(l.Units, func(a, b Unit) int { return strings.Compare(a.Class, b.Class) })
	for i := range l.Units {
		l.Units[i].Classes = l.Classes
	}
	return l, nil
}

func firstDup(sorted []string) int {
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return i
		}
	}
	return -1
}

// inspectWebDataset makes one unit per tar shard of each split's pattern.
func inspectWebDataset(ctx context.Context, src string, splits map[string]string) (Layout, error) {
	if len(splits) == 0 {
		if src == "" {
			return Layout{}, errors.New("datasets: webdataset: set dataset.source (a pattern such as gs://b/train-{000000..000146}.tar) or dataset.splits")
		}
		splits = map[string]string{"train": src}
	}
	var l Layout
	for _, split := range slices.Sorted(maps.Keys(splits)) {
		files, err := sourceFiles(ctx, splits[split])
		if err != nil {
			return Layout{}, fmt.Errorf("datasets: webdataset: split %s: %w", split, err)
		}
		n := 0
		for _, f := range files {
			if !isTarName(f.Path) {
				continue
			}
			l.Units = append(l.Units, Unit{Format: FormatWebDataset, Split: split, Path: f.Path, Size: f.Size})
			n++
		}
		if n == 0 {
			return Layout{}, fmt.Errorf("datasets: webdataset: split %s: %s matches no .tar or .tar.gz shard", split, splits[split])
		}
	}
	return l, nil
}

func isTarName(p string) bool {
	b := strings.ToLower(storage.Base(p))
	return strings.HasSuffix(b, ".tar") || strings.HasSuffix(b, ".tar.gz") || strings.HasSuffix(b, ".tgz")
}

// readImageNetUnit streams one class tar (train) or the validation tar.
func readImageNetUnit(ctx context.Context, u Unit, emit func(Item) error) error {
	if u.Split == "train" {
		return readClassTar(ctx, u, emit)
	}
	return readImageNetVal(ctx, u, emit)
}

// openUnitTar streams the unit's byte range (the whole file when Size is
// unknown) as a tar, gunzipped when compressed.
func openUnitTar(ctx context.Context, u Unit, name string) (*tarStream, io.Closer, error) {
	length := int64(-1)
	if u.Member != "" {
		length = u.Size
	}
	rc, err := storage.OpenRange(ctx, u.Path, u.Offset, length)
	if err != nil {
		return nil, nil, err
	}
	t, err := newTar(name, ctxReader{ctx, bufio.NewReaderSize(rc, 1<<20)}, length)
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	return t, rc, nil
}

// readClassTar streams the images of one class tar inside the train tar.
func readClassTar(ctx context.Context, u Unit, emit func(Item) error) error {
	label, ok := u.labelIndex()[u.Class]
	if !ok {
		return fmt.Errorf("datasets: read %s: class %s is not among the unit's classes", u.Path, u.Class)
	}
	t, c, err := openUnitTar(ctx, u, u.Path+": member "+u.Member)
	if err != nil {
		return err
	}
	defer c.Close()
	return eachTarImage(ctx, t, func(name string, data []byte) error {
		key := u.Split + "/" + u.Class + "/" + path.Base(name)
		return emit(Item{Key: key, Split: u.Split, Label: label, Source: t.name + "/" + name, Encoded: data})
	})
}

// eachTarImage calls fn with every image member of t, in archive order.
func eachTarImage(ctx context.Context, t *tarStream, fn func(name string, data []byte) error) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := t.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := t.image(ctx, hdr, fn); err != nil {
			return err
		}
	}
}

// image calls fn with the current member's name and data when it is a
// regular, visible image file; other members are skipped.
func (t *tarStream) image(ctx context.Context, hdr *tar.Header, fn func(name string, data []byte) error) error {
	if !isRegular(hdr) {
		return nil
	}
	name, err := memberName(t.name, hdr.Name)
	if err != nil {
		return err
	}
	if name == "" || hiddenPath(name) || !isImageName(name) {
		return nil
	}
	data, err := readLimited(ctx, t.tr, hdr.Size)
	if err != nil {
		return t.memberErr(err)
	}
	return fn(name, data)
}

// readImageNetVal streams the flat validation tar, labelled from the
// labels file.
func readImageNetVal(ctx context.Context, u Unit, emit func(Item) error) error {
	rc, err := storage.Open(ctx, u.LabelPath)
	if err != nil {
		return err
	}
	labels, err := parseValLabels(u.LabelPath, ctxReader{ctx, rc}, u.labelIndex())
	rc.Close()
	if err != nil {
		return err
	}
	each := func(name string, data []byte) error {
		base := path.Base(name)
		label, ok := labels[strings.TrimSuffix(base, path.Ext(base))]
		if !ok {
			return fmt.Errorf("datasets: read %s: image %s has no label in %s", u.Path, name, u.LabelPath)
		}
		return emit(Item{Key: u.Split + "/" + base, Split: u.Split, Label: label, Source: u.Path + ":" + name, Encoded: data})
	}
	if u.RangeEnd > 0 {
		return eachTarRangeImage(ctx, u, each)
	}
	t, c, err := openUnitTar(ctx, u, u.Path)
	if err != nil {
		return err
	}
	defer c.Close()
	return eachTarImage(ctx, t, each)
}

// maxValLabels bounds the entries of a validation labels file (ImageNet's
// has 50,000).
const maxValLabels = 1 << 24

// parseValLabels maps validation image names (without extension) to labels.
// A .csv is Kaggle's ImageId,PredictionString (the first wnid of the
// prediction string is the class); otherwise line i holds the wnid of
// ILSVRC2012_val_{i+1:08d}. Lines are read with the shared line cap.
func parseValLabels(file string, r io.Reader, index map[string]int) (map[string]int, error) {
	out := map[string]int{}
	csv := strings.HasSuffix(strings.ToLower(file), ".csv")
	n := 0
	err := EachLine(r, file, MaxTextLine, func(_ int, line []byte) error {
		s := strings.TrimSpace(string(line))
		if s == "" {
			return nil
		}
		n++
		if n > maxValLabels {
			return fmt.Errorf("datasets: %s: more than %d labels: is it the validation labels file?", file, maxValLabels)
		}
		name, wnid := fmt.Sprintf("ILSVRC2012_val_%08d", n), s
		if csv {
			if n == 1 && strings.HasPrefix(s, "ImageId") {
				return nil
			}
			id, pred, ok := strings.Cut(s, ",")
			if !ok {
				return fmt.Errorf("datasets: %s line %d: want ImageId,PredictionString, got %q", file, n, clip(s))
			}
			name, wnid = id, strings.Fields(pred + " ")[0]
		}
		label, ok := index[wnid]
		if !ok {
			return fmt.Errorf("datasets: %s line %d: class %q is not one of the %d train classes", file, n, clip(wnid), len(index))
		}
		out[name] = label
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readWebDatasetShard streams one tar shard, grouping consecutive members
// that share a key (the part of the base name before its first dot) into a
// sample: its image (.jpg, .jpeg, .png) and label (.cls, an integer).
func readWebDatasetShard(ctx context.Context, u Unit, emit func(Item) error) error {
	t, c, err := openUnitTar(ctx, u, u.Path)
	if err != nil {
		return err
	}
	defer c.Close()
	keys := unitKeySpace(u)
	seen := map[string]bool{}
	var cur wdsSample
	flush := func() error {
		if cur.key == "" {
			return nil
		}
		s := cur
		cur = wdsSample{}
		if s.image == nil {
			return fmt.Errorf("datasets: read %s: sample %s has no .jpg/.jpeg/.png member", u.Path, s.key)
		}
		key := keys + "/" + s.key
		if seen[s.key] {
			return fmt.Errorf("datasets: read %s: sample %s appears twice (its members are not together): keys must be unique in a shard: %w", u.Path, s.key, ErrDuplicate)
		}
		seen[s.key] = true
		return emit(Item{Key: key, Split: u.Split, Label: s.label, Source: u.Path + ":" + s.name, Encoded: s.image})
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := t.next()
		if err == io.EOF {
			return flush()
		}
		if err != nil {
			return err
		}
		if !isRegular(hdr) {
			continue
		}
		name, err := memberName(u.Path, hdr.Name)
		if err != nil {
			return err
		}
		if name == "" || hiddenPath(name) {
			continue
		}
		dir, base := path.Split(name)
		stem, ext, _ := strings.Cut(base, ".")
		key := dir + stem
		if key != cur.key {
			if err := flush(); err != nil {
				return err
			}
			cur = wdsSample{key: key, label: -1, classes: u.labelBound()}
		}
		if err := cur.add(ctx, t, name, strings.ToLower(ext), hdr.Size); err != nil {
			return err
		}
	}
}

// wdsSample gathers the members of one WebDataset sample.
type wdsSample struct {
	key, name string
	image     []byte
	label     int
	classes   int // the label bound (Unit.labelBound)
}

func (s *wdsSample) add(ctx context.Context, t *tarStream, name, ext string, size int64) error {
	switch ext {
	case "jpg", "jpeg", "png":
		if s.image != nil {
			return fmt.Errorf("datasets: read %s: sample %s has two images (%s and %s)", t.name, s.key, s.name, name)
		}
		data, err := readLimited(ctx, t.tr, size)
		if err != nil {
			return t.memberErr(err)
		}
		s.image, s.name = data, name
	case "cls", "label", "cls.txt":
		if size > 64 {
			return fmt.Errorf("datasets: read %s: label member %s is %d bytes; want a small integer", t.name, name, size)
		}
		data, err := readLimited(ctx, t.tr, size)
		if err != nil {
			return t.memberErr(err)
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil {
			return fmt.Errorf("datasets: read %s: label member %s holds %q; want an integer ≥ 0", t.name, name, data)
		}
		if err := checkLabel(t.name+": member "+name, v, 0, s.classes); err != nil {
			return err
		}
		s.label = int(v)
	}
	return nil
}
