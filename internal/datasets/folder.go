package datasets

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sync/semaphore"
	"golang.org/x/text/unicode/norm"

	"github.com/igpt/igpt/internal/storage"
)

// maxImageFile bounds the size of one encoded image read into memory.
const maxImageFile = 256 << 20

// knownSplits are split names that tell a split folder from a wrapper folder.
var knownSplits = map[string]bool{
	"train": true, "training": true, "test": true, "testing": true, "val": true, "valid": true,
	"validation": true, "dev": true, "eval": true, "unlabeled": true, "unlabelled": true,
}

// isImageName reports whether name has an image extension we decode.
func isImageName(name string) bool {
	switch strings.ToLower(path.Ext(name)) {
	case ".png", ".jpg", ".jpeg":
		return true
	}
	return false
}

// hiddenPath reports whether any component of a slash path is hidden (".x")
// or macOS resource-fork clutter ("__MACOSX"); such entries are skipped.
func hiddenPath(name string) bool {
	for c := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(c, ".") || c == "__MACOSX" {
			return true
		}
	}
	return false
}

// fentry is one entry of an image-folder source.
type fentry struct {
	name string // cleaned slash path (archive member, or path relative to the directory)
	orig string // name as stored (for zip lookups)
	dir  bool
}

type classKey struct{ split, class string }

// folderPlan is the <split>/<class>/ structure found in a source.
type folderPlan struct {
	root    string // wrapper prefix ending in "/", or ""
	classes []string
	splits  []string
	files   map[classKey][]fentry // images per class folder (NFC name), in source order
	count   map[string]int        // images per split
	raw     map[string][]string   // class folder names as spelt, per NFC name
}

// listNames formats up to 5 names for an error message.
func listNames(names []string) string {
	slices.Sort(names)
	if len(names) > 5 {
		return strings.Join(names[:5], ", ") + fmt.Sprintf(" and %d more", len(names)-5)
	}
	return strings.Join(names, ", ")
}

// planFolder finds the <split>/<class>/<image> tree in a list of entries,
// optionally inside one wrapper folder. src names the source in messages.
func planFolder(src string, entries []fentry, log *slog.Logger) (folderPlan, error) {
	p := folderPlan{files: map[classKey][]fentry{}, count: map[string]int{}, raw: map[string][]string{}}
	images, others, err := splitEntries(src, entries, log)
	if err != nil {
		return p, err
	}
	p.root = wrapperRoot(images)
	if p.root != "" {
		log.Debug("datasets: image folder: found a wrapper folder", "src", src, "root", p.root)
	}
	if err := p.assign(src, images); err != nil {
		return p, err
	}
	if err := p.checkEmptyClasses(src, others, log); err != nil {
		return p, err
	}
	for k := range p.files {
		if !slices.Contains(p.classes, k.class) {
			p.classes = append(p.classes, k.class)
		}
		if !slices.Contains(p.splits, k.split) {
			p.splits = append(p.splits, k.split)
		}
	}
	slices.Sort(p.classes)
	slices.Sort(p.splits)
	var spelt []string
	for _, c := range p.classes {
		spelt = append(spelt, p.raw[c]...)
	}
	if _, err := normalizeClasses("image folder "+src, spelt); err != nil {
		return p, err
	}
	p.warnSplitOnly(src, log)
	return p, nil
}

// warnSplitOnly warns, naming them, about classes found in some splits
// but not others (a class only in test): a probe would test on a label it
// never trained on. Not an error: a source may mean it.
func (p *folderPlan) warnSplitOnly(src string, log *slog.Logger) {
	if len(p.splits) < 2 {
		return
	}
	for _, split := range p.splits {
		var only []string
		for _, c := range p.classes {
			if len(p.files[classKey{split, c}]) == 0 {
				continue
			}
			in := 0
			for _, s := range p.splits {
				if len(p.files[classKey{s, c}]) > 0 {
					in++
				}
			}
			if in == 1 {
				only = append(only, c)
			}
		}
		if len(only) > 0 {
			log.Warn("datasets: image folder: classes found only in one split: a probe trains and tests on different labels", "src", src, "split", split, "count", len(only), "classes", listNames(only))
		}
	}
}

// splitEntries sorts entries into images and the rest (folders, other
// files), skipping hidden ones; a folder without images is an error that
// points at an archive inside it, if any.
func splitEntries(src string, entries []fentry, log *slog.Logger) (images, others []fentry, err error) {
	seen := map[string]bool{}
	hidden := 0
	for _, e := range entries {
		if e.name == "" {
			continue
		}
		if hiddenPath(e.name) {
			hidden++
			continue
		}
		if e.dir || !isImageName(e.name) {
			others = append(others, e)
			continue
		}
		if seen[e.name] {
			return nil, nil, fmt.Errorf("datasets: image folder: %s holds %s twice: %w", src, e.name, ErrCorrupt)
		}
		seen[e.name] = true
		images = append(images, e)
	}
	if hidden > 0 {
		log.Debug("datasets: image folder: skipped hidden entries", "src", src, "count", hidden)
	}
	if len(images) == 0 {
		hint := ""
		for _, e := range others {
			n := strings.ToLower(e.name)
			if !e.dir && !strings.Contains(n, "/") && (strings.HasSuffix(n, ".tar") || strings.HasSuffix(n, ".tar.gz") || strings.HasSuffix(n, ".tgz") || strings.HasSuffix(n, ".zip")) {
				hint = fmt.Sprintf(" (it holds the archive %s: give its path instead)", e.name)
				break
			}
		}
		return nil, nil, fmt.Errorf("datasets: image folder: %s has no images%s: lay it out as <split>/<class>/<image>.png|.jpg|.jpeg", src, hint)
	}
	return images, others, nil
}

// wrapperRoot returns "<top>/" when a single wrapper folder holds the
// splits, else "".
func wrapperRoot(images []fentry) string {
	first, _, _ := strings.Cut(images[0].name, "/")
	same, minDepth, secondIsSplit := true, 1<<30, false
	for _, e := range images {
		parts := strings.Split(e.name, "/")
		minDepth = min(minDepth, len(parts))
		if len(parts) < 2 || parts[0] != first {
			same = false
		}
		if len(parts) >= 3 && knownSplits[strings.ToLower(parts[1])] {
			secondIsSplit = true
		}
	}
	if same && !knownSplits[strings.ToLower(first)] && (minDepth >= 4 || secondIsSplit) {
		return first + "/"
	}
	return ""
}

// assign files every image under its (split, class), refusing images
// outside a <split>/<class>/ folder and a second wrapper folder.
func (p *folderPlan) assign(src string, images []fentry) error {
	var atTop, underSplit []string
	for _, e := range images {
		rel := strings.TrimPrefix(e.name, p.root)
		parts := strings.Split(rel, "/")
		if len(parts) >= 4 && !knownSplits[strings.ToLower(parts[0])] && knownSplits[strings.ToLower(parts[1])] {
			// w1/w2/train/cat/x.png: read as split "w2", class "train".
			return fmt.Errorf("datasets: image folder: %s: member %s: %s%s/ is a second wrapper folder around the split folder %s/ (one at most is recognised): give the folder %s%s itself as the source, or repack it as <split>/<class>/<image>",
				src, e.orig, p.root, parts[0], parts[1], p.root, parts[0])
		}
		switch len(parts) {
		case 1:
			atTop = append(atTop, e.name)
		case 2:
			underSplit = append(underSplit, e.name)
		default:
			k := classKey{parts[0], norm.NFC.String(parts[1])}
			p.files[k] = append(p.files[k], e)
			p.count[parts[0]]++
			if !slices.Contains(p.raw[k.class], parts[1]) {
				p.raw[k.class] = append(p.raw[k.class], parts[1])
			}
		}
	}
	if len(atTop) > 0 {
		return fmt.Errorf("datasets: image folder: %s: images outside any <split>/<class>/ folder: %s: move them into %s<split>/<class>/", src, listNames(atTop), p.root)
	}
	if len(underSplit) > 0 {
		return fmt.Errorf("datasets: image folder: %s: images directly under a split folder: %s: move each into a class folder (<split>/<class>/<image>)", src, listNames(underSplit))
	}
	return nil
}

// checkEmptyClasses refuses class folders without images (others are the
// non-image entries).
func (p *folderPlan) checkEmptyClasses(src string, others []fentry, log *slog.Logger) error {
	var empty []string
	nonImages := 0
	for _, e := range others {
		if !e.dir {
			nonImages++
			log.Debug("datasets: image folder: ignoring a file that is not a .png/.jpg/.jpeg image", "src", src, "file", e.name)
		}
		if !strings.HasPrefix(e.name, p.root) {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(e.name, p.root), "/")
		if len(parts) < 2 || (!e.dir && len(parts) < 3) || p.count[parts[0]] == 0 {
			continue
		}
		k := classKey{parts[0], norm.NFC.String(parts[1])}
		if len(p.files[k]) == 0 {
			d := p.root + parts[0] + "/" + parts[1] + "/"
			if !slices.Contains(empty, d) {
				empty = append(empty, d)
			}
		}
	}
	if len(empty) > 0 {
		return fmt.Errorf("datasets: image folder: %s in %s has no images; remove the folder or add images", listNames(empty), src)
	}
	if nonImages > 0 {
		log.Debug("datasets: image folder: ignored files that are not images", "src", src, "count", nonImages)
	}
	return nil
}

// archiveKind tells a zip from a tar (or tar.gz) file by its first bytes,
// falling back to the file name.
func archiveKind(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("datasets: %w", err)
	}
	defer f.Close()
	var magic [4]byte
	n, _ := io.ReadFull(f, magic[:])
	if n >= 2 && magic[0] == 'P' && magic[1] == 'K' {
		return "zip", nil
	}
	if n < 2 && strings.EqualFold(filepath.Ext(p), ".zip") {
		return "zip", nil
	}
	return "tar", nil
}

func inspectFolder(ctx context.Context, src string, fi os.FileInfo, opt Options, log *slog.Logger) (Layout, error) {
	if fi.IsDir() {
		return inspectFolderDir(ctx, src, log)
	}
	kind, err := archiveKind(src)
	if err != nil {
		return Layout{}, err
	}
	if kind == "zip" {
		zr, err := openZip(src)
		if err != nil {
			return Layout{}, err
		}
		defer zr.Close()
		return inspectFolderZip(src, zr.Reader, log)
	}
	t, err := openTar(ctx, src)
	if err != nil {
		return Layout{}, err
	}
	defer t.Close()
	return inspectFolderTar(ctx, t, log)
}

// resolveInside resolves the links in p, a path under the folder source
// whose resolved path is root, and refuses one that leads outside it: a
// link to /etc/passwd or to another dataset is not part of the source.
func resolveInside(root, p string) (string, error) {
	r, err := storage.ResolveUnder(root, p)
	if errors.Is(err, storage.ErrOutside) {
		return "", fmt.Errorf("datasets: image folder: %s is a link to %s, outside the source folder %s: igpt reads only files inside the source; copy the file in or remove the link", p, r, root)
	}
	if err != nil {
		return "", fmt.Errorf("datasets: image folder: %w", err)
	}
	return r, nil
}

func inspectFolderDir(ctx context.Context, src string, log *slog.Logger) (Layout, error) {
	root, err := filepath.EvalSymlinks(src)
	if err != nil {
		return Layout{}, fmt.Errorf("datasets: image folder: %w", err)
	}
	var entries []fentry
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("datasets: image folder: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.Type()&fs.ModeSymlink != 0 {
			fi, err := os.Stat(p)
			if err != nil || !fi.Mode().IsRegular() {
				log.Debug("datasets: image folder: not following a link", "path", p)
				return nil
			}
			if _, err := resolveInside(root, p); err != nil {
				return err
			}
		} else if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		entries = append(entries, fentry{name: rel, orig: rel, dir: d.IsDir()})
		return nil
	})
	if err != nil {
		return Layout{}, err
	}
	p, err := planFolder(src, entries, log)
	if err != nil {
		return Layout{}, err
	}
	dir := filepath.Join(src, filepath.FromSlash(strings.TrimSuffix(p.root, "/")))
	return folderUnits(p, dir, "", func(e fentry) string { return strings.TrimPrefix(e.name, p.root) }), nil
}

// folderUnits makes one unit per (split, class), members sorted.
func folderUnits(p folderPlan, unitPath, root string, member func(fentry) string) Layout {
	l := Layout{Classes: p.classes}
	for _, split := range p.splits {
		next := 0
		for _, class := range p.classes {
			files := p.files[classKey{split, class}]
			if len(files) == 0 {
				continue
			}
			names := make([]string, len(files))
			for i, e := range files {
				names[i] = member(e)
			}
			slices.Sort(names)
			l.Units = append(l.Units, Unit{
				Format:     FormatFolder,
				Split:      split,
				Path:       unitPath,
				Members:    names,
				Classes:    p.classes,
				FirstIndex: next,
				Root:       root,
				Count:      len(names),
			})
			next += len(names)
		}
	}
	return l
}

// zipCloser is a zip.Reader over a file or a byte slice.
type zipCloser struct {
	*zip.Reader
	c    io.Closer
	size int64 // of the archive
}

func (z *zipCloser) Close() error {
	if z.c != nil {
		return z.c.Close()
	}
	return nil
}

func openZip(p string) (*zipCloser, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("datasets: %w", err)
	}
	zr, err := newZip(p, f, fi.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	zr.c = f
	return zr, nil
}

func newZip(name string, r io.ReaderAt, size int64) (*zipCloser, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, corrupt(name, fmt.Sprintf("no valid zip directory at the end of its %d bytes", size), err)
	}
	return &zipCloser{Reader: zr, size: size}, nil
}

func zipEntries(src string, zr *zip.Reader) ([]fentry, error) {
	entries := make([]fentry, 0, len(zr.File))
	for _, f := range zr.File {
		dir := strings.HasSuffix(f.Name, "/") || f.Mode().IsDir()
		if !dir && !f.Mode().IsRegular() {
			continue // links and the like
		}
		name, err := memberName(src, f.Name)
		if err != nil {
			return nil, err
		}
		entries = append(entries, fentry{name: name, orig: f.Name, dir: dir})
	}
	return entries, nil
}

func inspectFolderZip(src string, zr *zip.Reader, log *slog.Logger) (Layout, error) {
	entries, err := zipEntries(src, zr)
	if err != nil {
		return Layout{}, err
	}
	p, err := planFolder(src, entries, log)
	if err != nil {
		return Layout{}, err
	}
	l := folderUnits(p, src, p.root, func(e fentry) string { return e.orig })
	// Sort members by their cleaned name so keys come out in order.
	for i := range l.Units {
		slices.SortFunc(l.Units[i].Members, func(a, b string) int { return strings.Compare(cleanMember(a), cleanMember(b)) })
	}
	return l, nil
}

// tarEntry is the folder entry of a tar member: a folder or a regular file
// (ok false for links and the like), its name checked by memberName.
func tarEntry(archive string, hdr *tar.Header) (e fentry, ok bool, err error) {
	dir := hdr.Typeflag == tar.TypeDir || hdr.FileInfo().IsDir()
	if !dir && !isRegular(hdr) {
		return fentry{}, false, nil
	}
	name, err := memberName(archive, hdr.Name)
	if err != nil {
		return fentry{}, false, err
	}
	return fentry{name: name, orig: hdr.Name, dir: dir}, true, nil
}

func inspectFolderTar(ctx context.Context, t *tarStream, log *slog.Logger) (Layout, error) {
	var entries []fentry
	for {
		if err := ctx.Err(); err != nil {
			return Layout{}, err
		}
		hdr, err := t.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Layout{}, err
		}
		e, ok, err := tarEntry(t.name, hdr)
		if err != nil {
			return Layout{}, err
		}
		if ok {
			entries = append(entries, e)
		}
	}
	if err := t.drain(log); err != nil {
		return Layout{}, err
	}
	p, err := planFolder(t.name, entries, log)
	if err != nil {
		return Layout{}, err
	}
	l := Layout{Classes: p.classes}
	for _, split := range p.splits {
		l.Units = append(l.Units, Unit{
			Format:  FormatFolder,
			Split:   split,
			Path:    t.name,
			Classes: p.classes,
			Root:    p.root,
			Count:   p.count[split],
		})
	}
	return l, nil
}

// heldBudget bounds the bytes of encoded images (over gateMin each) that
// the readers of this process hold in memory at once; see ReadUnit. A
// variable so that tests can shrink it.
var heldBudget = semaphore.NewWeighted(heldBytes)

const (
	heldBytes = 4 * maxImageFile // ≥ maxImageFile, or one image could never be read
	gateMin   = 1 << 20          // smaller images pass freely
)

// held is what one ReadUnit call holds of heldBudget.
type held struct {
	budget *semaphore.Weighted
	n      int64
}

type heldKey struct{}

func withHeld(ctx context.Context) (context.Context, *held) {
	h := &held{budget: heldBudget}
	return context.WithValue(ctx, heldKey{}, h), h
}

func (h *held) release() {
	if h.n > 0 {
		h.budget.Release(h.n)
		h.n = 0
	}
}

// hold takes n bytes of the budget for the ReadUnit call of ctx (none
// outside one), waiting while other readers hold too much.
func hold(ctx context.Context, n int64) error {
	h, _ := ctx.Value(heldKey{}).(*held)
	if h == nil || n <= gateMin {
		return nil
	}
	if err := h.budget.Acquire(ctx, n); err != nil {
		return err
	}
	h.n += n
	return nil
}

// maxInflation bounds how many times its compressed size a zip member, or
// the data of a gzip or zip archive read (beyond inflateFloor), may inflate
// to. Image files do not compress: a PNG or JPEG member of a zip stays near
// 1×, a tar.gz of them too; deflate's most is about 1032×.
const (
	maxInflation = 100
	inflateFloor = 64 << 20
)

// readLimited reads all of r, which claims to hold size bytes, refusing more
// than maxImageFile. It does not trust size for the allocation. Inside
// ReadUnit, an image over gateMin bytes first takes its size of heldBudget.
func readLimited(ctx context.Context, r io.Reader, size int64) ([]byte, error) {
	if size > maxImageFile {
		return nil, fmt.Errorf("%d bytes, more than the %d allowed for one image", size, maxImageFile)
	}
	w := size
	if w < 0 {
		w = maxImageFile
	}
	if err := hold(ctx, w); err != nil {
		return nil, err
	}
	if size >= 0 && size <= 1<<20 {
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		// There must be nothing more; reading to the end also makes a
		// zip member check its CRC.
		var one [1]byte
		n, err := r.Read(one[:])
		if n > 0 {
			return nil, fmt.Errorf("more than the %d bytes announced", size)
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		return buf, nil
	}
	var b bytes.Buffer
	n, err := b.ReadFrom(io.LimitReader(r, maxImageFile+1))
	if err != nil {
		return nil, err
	}
	if n > maxImageFile {
		return nil, fmt.Errorf("more than the %d bytes allowed for one image", maxImageFile)
	}
	if size >= 0 && n != size {
		return nil, fmt.Errorf("%d bytes, but %d announced: %w", n, size, io.ErrUnexpectedEOF)
	}
	return b.Bytes(), nil
}

func classIndex(classes []string) map[string]int {
	m := make(map[string]int, len(classes))
	for i, c := range classes {
		m[c] = i
	}
	return m
}

// folderItem makes the item of an image whose key (path under the root) is
// key, or reports a key that does not fit the unit.
func folderItem(u Unit, labels map[string]int, key, source string, data []byte) (Item, error) {
	parts := strings.Split(key, "/")
	if len(parts) < 3 || parts[0] != u.Split {
		return Item{}, fmt.Errorf("datasets: read %s: %s is not under %s<split>/<class>/: the source changed since Inspect; run Inspect again", u.Path, source, u.Root)
	}
	label, ok := labels[norm.NFC.String(parts[1])]
	if !ok {
		return Item{}, fmt.Errorf("datasets: read %s: %s is in class folder %q, which is not among the %d classes Inspect found: the source changed since Inspect; run Inspect again", u.Path, source, parts[1], len(u.Classes))
	}
	return Item{Key: key, Split: u.Split, Label: label, Source: source, Encoded: data}, nil
}

func readFolderUnit(ctx context.Context, u Unit, emit func(Item) error) error {
	fi, err := os.Stat(u.Path)
	if err != nil {
		return fmt.Errorf("datasets: read unit: %w", err)
	}
	if fi.IsDir() {
		return readFolderDir(ctx, u, emit)
	}
	kind, err := archiveKind(u.Path)
	if err != nil {
		return err
	}
	if kind == "zip" {
		zr, err := openZip(u.Path)
		if err != nil {
			return err
		}
		defer zr.Close()
		return readFolderZip(ctx, u, zr, emit)
	}
	t, err := openTar(ctx, u.Path)
	if err != nil {
		return err
	}
	defer t.Close()
	return readFolderTar(ctx, u, t, emit)
}

func readFolderDir(ctx context.Context, u Unit, emit func(Item) error) error {
	labels := u.labelIndex()
	root, err := filepath.EvalSymlinks(u.Path)
	if err != nil {
		return fmt.Errorf("datasets: read unit: %w", err)
	}
	n := 0
	for _, m := range u.Members {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := filepath.Join(u.Path, filepath.FromSlash(m))
		// Checked again here: the folder may have changed since Inspect.
		r, err := resolveInside(root, p)
		if err != nil {
			return err
		}
		f, err := os.Open(r)
		if err != nil {
			return fmt.Errorf("datasets: read unit: %w", err)
		}
		var size int64 = -1
		if st, err := f.Stat(); err == nil {
			size = st.Size()
		}
		data, err := readLimited(ctx, f, size)
		f.Close()
		if err != nil {
			return fmt.Errorf("datasets: read %s: %w", p, err)
		}
		it, err := folderItem(u, labels, m, p, data)
		if err != nil {
			return err
		}
		if err := emit(it); err != nil {
			return err
		}
		n++
	}
	return checkCount(u, n)
}

func readFolderZip(ctx context.Context, u Unit, zr *zipCloser, emit func(Item) error) error {
	var inflated uint64 // declared sizes; readLimited holds each member to its own
	byName := make(map[string]*zip.File, len(zr.File))
	for _, f := range zr.File {
		byName[f.Name] = f
	}
	labels := u.labelIndex()
	n := 0
	for _, m := range u.Members {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, ok := byName[m]
		if !ok {
			return fmt.Errorf("datasets: read %s: member %s is missing: the source changed since Inspect; run Inspect again", u.Path, m)
		}
		if err := zipRatio(u.Path, f); err != nil {
			return err
		}
		if inflated += f.UncompressedSize64; inflated > uint64(inflateFloor)+maxInflation*uint64(max(zr.size, 0)) {
			return fmt.Errorf("datasets: read %s: at member %s its members inflate to %d bytes, more than %d plus %d times the archive's %d bytes: a zip bomb? refusing it: %w",
				u.Path, f.Name, inflated, inflateFloor, maxInflation, zr.size, ErrCorrupt)
		}
		data, err := readZipFile(ctx, u.Path, f)
		if err != nil {
			return err
		}
		key := strings.TrimPrefix(cleanMember(m), u.Root)
		it, err := folderItem(u, labels, key, u.Path+":"+m, data)
		if err != nil {
			return err
		}
		if err := emit(it); err != nil {
			return err
		}
		n++
	}
	return checkCount(u, n)
}

// zipRatio refuses a zip member that inflates over maxInflation times,
// before inflating it.
func zipRatio(archive string, f *zip.File) error {
	if f.UncompressedSize64 > gateMin && f.UncompressedSize64 > maxInflation*f.CompressedSize64 {
		off, _ := f.DataOffset()
		return inflationErr(archive, f.Name, fmt.Sprintf("data at byte %d", off), f.CompressedSize64, f.UncompressedSize64)
	}
	return nil
}

// inflationErr is zipRatio's refusal of member, which the central
// directory says inflates from csize to usize bytes; where says where in
// the archive it lies.
func inflationErr(archive, member, where string, csize, usize uint64) error {
	return fmt.Errorf("datasets: read %s: member %s (%s) inflates from %d to %d bytes, over %d times: no image file compresses so well (a zip bomb?); refusing it: %w",
		archive, member, where, csize, usize, maxInflation, ErrCorrupt)
}

func readZipFile(ctx context.Context, archive string, f *zip.File) ([]byte, error) {
	off, _ := f.DataOffset()
	if err := zipRatio(archive, f); err != nil {
		return nil, err
	}
	rc, err := f.Open()
	if err != nil {
		return nil, corrupt(archive, fmt.Sprintf("member %s (data at byte %d)", f.Name, off), err)
	}
	defer rc.Close()
	cr := &countingReader{r: rc}
	size := int64(-1)
	if f.UncompressedSize64 <= maxImageFile {
		size = int64(f.UncompressedSize64)
	}
	data, err := readLimited(ctx, cr, size)
	if err != nil {
		return nil, ioErr(archive, fmt.Sprintf("member %s at byte %d of %d (data at byte %d of the archive)", f.Name, cr.n, f.UncompressedSize64, off), err)
	}
	return data, nil
}

func readFolderTar(ctx context.Context, u Unit, t *tarStream, emit func(Item) error) error {
	labels := u.labelIndex()
	var want map[string]bool
	if u.Members != nil {
		want = make(map[string]bool, len(u.Members))
		for _, m := range u.Members {
			want[m] = true
		}
	}
	prefix := u.Root + u.Split + "/"
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := t.next()
		if err == io.EOF {
			break
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
		if name == "" || !strings.HasPrefix(name, prefix) || hiddenPath(name) || !isImageName(name) {
			continue
		}
		if want != nil {
			if !want[hdr.Name] {
				continue
			}
			delete(want, hdr.Name)
		}
		data, err := readLimited(ctx, t.tr, hdr.Size)
		if err != nil {
			return t.memberErr(err)
		}
		it, err := folderItem(u, labels, strings.TrimPrefix(name, u.Root), u.Path+":"+hdr.Name, data)
		if err != nil {
			return err
		}
		if err := emit(it); err != nil {
			return err
		}
		n++
		if want != nil && len(want) == 0 {
			break
		}
	}
	if len(want) > 0 {
		missing := make([]string, 0, len(want))
		for m := range want {
			missing = append(missing, m)
		}
		return fmt.Errorf("datasets: read %s: members missing: %s: the source changed since Inspect; run Inspect again", u.Path, listNames(missing))
	}
	return checkCount(u, n)
}
