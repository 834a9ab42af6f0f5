package datasets

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"cmp"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/igpt/igpt/internal/storage"
)

// An image-folder archive (.zip, .tar, .tar.gz) given as one gs:// object
// is read in place, like ImageNet's tars: the launcher neither copies it
// nor uploads it to the root's _cache, and the workers read their part of
// it with ranged reads, never a local copy.
//
//   - zip: the launcher reads the central directory (one ranged read of
//     its size at the end) and cuts each split's members, in archive order,
//     into units of about ZipUnitBytes of compressed data; a unit lists
//     what the directory says of its members (ZipMember) and its worker
//     reads their local headers and data in one forward ranged read.
//   - tar: a tar has no directory, and the class table must be known
//     before any record is labelled, so the launcher walks the member
//     headers with one 512-byte ranged read each (walkTarHeaders, as for
//     ImageNet's class tars): it reads no image, but makes one request per
//     member, fine for thousands and slow for millions (pack those as a zip,
//     WebDataset shards or a gs:// folder tree). Each split's members are
//     cut into byte ranges of TarRangeBytes read as eachTarRangeImage does.
//   - tar.gz cannot be entered in the middle: the launcher streams it once
//     to list it (no copy) and each split is one unit whose worker streams
//     the archive again.
const (
	FormatFolderZip = "folder-zip"
	FormatFolderTar = "folder-tar"
)

// ZipUnitBytes is about the compressed bytes of the members one unit of a
// zip read in place holds; zipUnitFiles bounds its members, so that a unit
// list line stays far under MaxListLine.
var ZipUnitBytes int64 = 128 << 20

const zipUnitFiles = 20000

// zipGapBytes is the largest gap between two members that a worker reads
// through rather than starting a new ranged read.
const zipGapBytes = 1 << 20

// ZipMember is one image of a zip read in place, as its central directory
// describes it: a unit carries these so that its worker never reads the
// directory again.
type ZipMember struct {
	Name   string `json:"n"`   // as stored
	Offset int64  `json:"o"`   // of its local file header
	CSize  int64  `json:"c"`   // compressed bytes
	USize  int64  `json:"u"`   // uncompressed bytes
	Method uint16 `json:"m"`   // zip.Store or zip.Deflate
	CRC32  uint32 `json:"crc"` // of the uncompressed data
}

// IsFolderArchive reports whether a folder dataset's source is one
// archive object on gs:// (read in place by InspectFolderArchive).
func IsFolderArchive(src string) bool {
	return storage.IsGCS(src) && !IsFolderPrefix(src)
}

// InspectFolderArchive plans an image-folder archive read in place (see
// FormatFolderZip): the launcher reads the zip's central directory or the
// tar's headers, never an image.
func InspectFolderArchive(ctx context.Context, src string, opt Options) (Layout, error) {
	if err := opt.Validate(); err != nil {
		return Layout{}, err
	}
	size, err := storage.Size(ctx, src)
	if err != nil {
		return Layout{}, err
	}
	magic, err := readHead(ctx, src, 4)
	if err != nil {
		return Layout{}, err
	}
	log := slog.Default().With("dataset", "folder", "src", src)
	var l Layout
	switch {
	case len(magic) >= 2 && magic[0] == 'P' && magic[1] == 'K':
		l, err = inspectZipInPlace(ctx, src, size, log)
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		l, err = inspectTarGzInPlace(ctx, src, size, log)
	default:
		l, err = inspectTarInPlace(ctx, src, size, log)
	}
	if err != nil {
		return Layout{}, err
	}
	if err := finishLayout(Spec{Name: "folder", Format: FormatFolder}, &l, opt); err != nil {
		return Layout{}, err
	}
	return l, nil
}

// readHead reads the first n bytes of p (fewer when it is shorter).
func readHead(ctx context.Context, p string, n int64) ([]byte, error) {
	rc, err := storage.OpenRange(ctx, p, 0, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, ioErr(p, "its first bytes", err)
	}
	return b, nil
}

// zipProbe is the io.ReaderAt a zip is opened over at plan time. archive/
// zip keeps where a member's local header starts to itself, and
// File.DataOffset reads that header first: while probing, the read is
// recorded and refused, so the offset is known without reading it.
type zipProbe struct {
	r       io.ReaderAt
	probing bool
	at      int64
}

var errZipProbe = errors.New("zip header offset probe")

func (z *zipProbe) ReadAt(b []byte, off int64) (int, error) {
	if z.probing {
		z.at = off
		return 0, errZipProbe
	}
	return z.r.ReadAt(b, off)
}

// headerOffset returns where f's local header starts, reading nothing.
func (z *zipProbe) headerOffset(archive string, f *zip.File) (int64, error) {
	z.probing, z.at = true, -1
	_, err := f.DataOffset()
	z.probing = false
	if !errors.Is(err, errZipProbe) || z.at < 0 {
		return 0, fmt.Errorf("datasets: read %s: member %s: cannot locate its local header (%v): this Go's archive/zip no longer reads it through DataOffset; read the zip as a local file", archive, f.Name, err)
	}
	return z.at, nil
}

func inspectZipInPlace(ctx context.Context, src string, size int64, log *slog.Logger) (Layout, error) {
	ra, err := storage.OpenReaderAt(ctx, src)
	if err != nil {
		return Layout{}, err
	}
	defer ra.Close()
	probe := &zipProbe{r: ra}
	zr, err := newZip(src, probe, size)
	if err != nil {
		return Layout{}, err
	}
	entries, err := zipEntries(src, zr.Reader)
	if err != nil {
		return Layout{}, err
	}
	p, err := planFolder(src, entries, log)
	if err != nil {
		return Layout{}, err
	}
	byName := make(map[string]*zip.File, len(zr.File))
	for _, f := range zr.File {
		byName[f.Name] = f
	}
	l := Layout{Classes: p.classes}
	for _, split := range p.splits {
		var members []ZipMember
		for _, class := range p.classes {
			for _, e := range p.files[classKey{split, class}] {
				f := byName[e.orig]
				off, err := probe.headerOffset(src, f)
				if err != nil {
					return Layout{}, err
				}
				if f.CompressedSize64 > uint64(size) || f.UncompressedSize64 > 1<<62 {
					return Layout{}, corrupt(src, "member "+f.Name, fmt.Errorf("the central directory gives it %d compressed bytes in a %d-byte archive", f.CompressedSize64, size))
				}
				members = append(members, ZipMember{Name: f.Name, Offset: off, CSize: int64(f.CompressedSize64), USize: int64(f.UncompressedSize64), Method: f.Method, CRC32: f.CRC32})
			}
		}
		slices.SortFunc(members, func(a, b ZipMember) int { return cmp.Compare(a.Offset, b.Offset) })
		for start := 0; start < len(members); {
			end, bytes := start, int64(0)
			for end < len(members) && (end == start || (bytes+members[end].CSize <= ZipUnitBytes && end-start < zipUnitFiles)) {
				bytes += members[end].CSize
				end++
			}
			l.Units = append(l.Units, Unit{Format: FormatFolderZip, Split: split, Path: src, Size: size, Root: p.root,
				Classes: p.classes, Zip: members[start:end], FirstIndex: start, Count: end - start})
			start = end
		}
	}
	return l, nil
}

func inspectTarInPlace(ctx context.Context, src string, size int64, log *slog.Logger) (Layout, error) {
	var entries []fentry
	chains := map[string]int64{} // image name → where its header chain starts
	err := walkTarHeaders(ctx, src, func(hdr *tar.Header, chain, _ int64) error {
		e, ok, err := tarEntry(src, hdr)
		if ok {
			entries = append(entries, e)
			chains[e.name] = chain
		}
		return err
	})
	if err != nil {
		return Layout{}, err
	}
	p, err := planFolder(src, entries, log)
	if err != nil {
		return Layout{}, err
	}
	l := Layout{Classes: p.classes}
	for _, split := range p.splits {
		var offs []int64
		for _, class := range p.classes {
			for _, e := range p.files[classKey{split, class}] {
				offs = append(offs, chains[e.name])
			}
		}
		slices.Sort(offs)
		first := 0
		for i := range offs {
			if i+1 < len(offs) && offs[i+1]-offs[first] < TarRangeBytes {
				continue
			}
			l.Units = append(l.Units, Unit{Format: FormatFolderTar, Split: split, Path: src, Size: size, Root: p.root, Classes: p.classes,
				RangeStart: offs[first], RangeEnd: offs[i] + 1, FirstIndex: first, Count: i + 1 - first})
			first = i + 1
		}
	}
	return l, nil
}

func inspectTarGzInPlace(ctx context.Context, src string, size int64, log *slog.Logger) (Layout, error) {
	rc, err := storage.OpenRange(ctx, src, 0, -1)
	if err != nil {
		return Layout{}, err
	}
	defer rc.Close()
	t, err := newTar(src, ctxReader{ctx, bufio.NewReaderSize(rc, 1<<20)}, size)
	if err != nil {
		return Layout{}, err
	}
	l, err := inspectFolderTar(ctx, t, log)
	for i := range l.Units {
		l.Units[i].Format = FormatFolderTar
	}
	return l, err
}

// readFolderTarInPlace reads a unit of a folder tar read in place: the
// members of its split whose header starts in its byte range, or, for a
// tar.gz (no range), the whole archive streamed.
func readFolderTarInPlace(ctx context.Context, u Unit, emit func(Item) error) error {
	if u.RangeEnd == 0 {
		t, c, err := openUnitTar(ctx, u, u.Path)
		if err != nil {
			return err
		}
		defer c.Close()
		return readFolderTar(ctx, u, t, emit)
	}
	labels := u.labelIndex()
	prefix := u.Root + u.Split + "/"
	n := 0
	err := eachTarRangeImage(ctx, u, func(name string, data []byte) error {
		if !strings.HasPrefix(name, prefix) {
			return nil // another split's member in the range
		}
		it, err := folderItem(u, labels, strings.TrimPrefix(name, u.Root), u.Path+":"+name, data)
		if err != nil {
			return err
		}
		n++
		return emit(it)
	})
	if err != nil {
		return err
	}
	return checkCount(u, n)
}

// readFolderZipInPlace reads a unit of a zip read in place: its members'
// local headers and data, in archive order, through forward ranged reads.
func readFolderZipInPlace(ctx context.Context, u Unit, emit func(Item) error) error {
	labels := u.labelIndex()
	s := &rangeStream{ctx: ctx, path: u.Path, size: u.Size}
	defer s.close()
	var inflated int64
	for _, m := range u.Zip {
		if err := ctx.Err(); err != nil {
			return err
		}
		if m.Offset < 0 || m.CSize < 0 || m.USize < 0 || m.Offset > u.Size || m.CSize > u.Size {
			return fmt.Errorf("datasets: read %s: member %.80q: offset %d, sizes %d and %d do not fit a %d-byte archive: the unit list is damaged or forged; rerun the download stage with --force", u.Path, m.Name, m.Offset, m.CSize, m.USize, u.Size)
		}
		if inflated += m.USize; inflated > inflateFloor+maxInflation*u.Size {
			return fmt.Errorf("datasets: read %s: at member %s its members inflate to %d bytes, more than %d plus %d times the archive's %d bytes: a zip bomb? refusing it: %w",
				u.Path, m.Name, inflated, inflateFloor, maxInflation, u.Size, ErrCorrupt)
		}
		if err := s.seek(m.Offset); err != nil {
			return err
		}
		data, err := readZipLocal(ctx, u.Path, s, m)
		if err != nil {
			return err
		}
		name, err := memberName(u.Path, m.Name)
		if err != nil {
			return err
		}
		it, err := folderItem(u, labels, strings.TrimPrefix(name, u.Root), u.Path+":"+m.Name, data)
		if err != nil {
			return err
		}
		if err := emit(it); err != nil {
			return err
		}
	}
	return checkCount(u, len(u.Zip))
}

// zipLocalSig starts a zip local file header.
const zipLocalSig = 0x04034b50

// readZipLocal reads the member m from r, which is positioned at its local
// file header: the header (its name must be m's), then m.CSize bytes of
// data, inflated and checked against the directory's size and CRC-32.
func readZipLocal(ctx context.Context, archive string, r io.Reader, m ZipMember) ([]byte, error) {
	where := fmt.Sprintf("member %s (local header at byte %d)", m.Name, m.Offset)
	if m.USize > gateMin && m.USize > maxInflation*m.CSize {
		return nil, inflationErr(archive, m.Name, fmt.Sprintf("local header at byte %d", m.Offset), uint64(m.CSize), uint64(m.USize))
	}
	var h [30]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, ioErr(archive, where, err)
	}
	if binary.LittleEndian.Uint32(h[0:]) != zipLocalSig {
		return nil, corrupt(archive, where, errors.New("no local file header there: the archive changed since the unit list was made; rerun the download stage with --force"))
	}
	if binary.LittleEndian.Uint16(h[6:])&1 != 0 {
		return nil, fmt.Errorf("datasets: read %s: %s is encrypted: igpt reads only unencrypted zips; repack it without a password", archive, where)
	}
	name := make([]byte, binary.LittleEndian.Uint16(h[26:]))
	if _, err := io.ReadFull(r, name); err != nil {
		return nil, ioErr(archive, where+": its name", err)
	}
	if string(name) != m.Name {
		return nil, corrupt(archive, where, fmt.Errorf("the local header names %.80q: the archive changed since the unit list was made; rerun the download stage with --force", name))
	}
	if _, err := io.CopyN(io.Discard, r, int64(binary.LittleEndian.Uint16(h[28:]))); err != nil {
		return nil, ioErr(archive, where+": its extra field", err)
	}
	var data io.Reader = io.LimitReader(r, m.CSize)
	switch m.Method {
	case zip.Store:
		if m.USize != m.CSize {
			return nil, corrupt(archive, where, fmt.Errorf("stored, but %d compressed and %d uncompressed bytes", m.CSize, m.USize))
		}
	case zip.Deflate:
		fr := flate.NewReader(data)
		defer fr.Close()
		data = fr
	default:
		return nil, fmt.Errorf("datasets: read %s: %s uses compression method %d: igpt reads stored and deflated members; repack the zip with deflate", archive, where, m.Method)
	}
	crc := crc32.NewIEEE()
	cr := &countingReader{r: io.TeeReader(data, crc)}
	size := int64(-1)
	if m.USize <= maxImageFile {
		size = m.USize
	}
	out, err := readLimited(ctx, cr, size)
	if err != nil {
		return nil, ioErr(archive, fmt.Sprintf("%s at byte %d of %d", where, cr.n, m.USize), err)
	}
	if crc.Sum32() != m.CRC32 {
		return nil, corrupt(archive, where, fmt.Errorf("CRC-32 %08x, the directory says %08x", crc.Sum32(), m.CRC32))
	}
	return out, nil
}

// rangeStream reads a file forward from offset to offset: through one
// ranged read while the gaps between them are under zipGapBytes, a new
// one past a larger gap.
type rangeStream struct {
	ctx  context.Context
	path string
	size int64
	rc   io.ReadCloser
	br   *bufio.Reader
	pos  int64 // offset of br's next byte
}

func (s *rangeStream) seek(off int64) error {
	if s.rc != nil && off >= s.pos && off-s.pos <= zipGapBytes {
		n, err := s.br.Discard(int(off - s.pos))
		s.pos += int64(n)
		if err != nil {
			return ioErr(s.path, fmt.Sprintf("skipping to byte %d", off), err)
		}
		return nil
	}
	s.close()
	rc, err := storage.OpenRange(s.ctx, s.path, off, max(0, s.size-off))
	if err != nil {
		return err
	}
	s.rc, s.pos = rc, off
	s.br = bufio.NewReaderSize(ctxReader{s.ctx, rc}, 256<<10)
	return nil
}

func (s *rangeStream) Read(p []byte) (int, error) {
	n, err := s.br.Read(p)
	s.pos += int64(n)
	return n, err
}

func (s *rangeStream) close() {
	if s.rc != nil {
		s.rc.Close()
		s.rc = nil
	}
}
