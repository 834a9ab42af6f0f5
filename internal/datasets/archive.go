package datasets

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strings"
)

// ErrCorrupt is wrapped by every error about a damaged source file.
var ErrCorrupt = errors.New("the file is truncated or corrupt: delete it and download again")

// corrupt returns an error about a damaged file: file names the file, where
// says where in it (member, record, byte offset) and err is the cause.
func corrupt(file, where string, err error) error {
	if where != "" {
		return fmt.Errorf("datasets: read %s: %s: %w: %w", file, where, err, ErrCorrupt)
	}
	return fmt.Errorf("datasets: read %s: %w: %w", file, err, ErrCorrupt)
}

// ioErr classifies an error met while reading file: context errors and
// operating-system I/O errors pass through with context, anything else (short
// reads, bad gzip or tar data) means the file is damaged.
func ioErr(file, where string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		if where != "" {
			return fmt.Errorf("datasets: read %s: %s: %w", file, where, err)
		}
		return fmt.Errorf("datasets: read %s: %w", file, err)
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return corrupt(file, where, err)
}

// countingReader counts the bytes read through it and remembers the last
// 512 of them (to recognise a tar end-of-archive marker).
type countingReader struct {
	r    io.Reader
	n    int64
	tail [512]byte
	tn   int // valid bytes at the end of tail
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n >= len(c.tail) {
		copy(c.tail[:], p[n-len(c.tail):n])
		c.tn = len(c.tail)
	} else if n > 0 {
		copy(c.tail[:], c.tail[n:])
		copy(c.tail[len(c.tail)-n:], p[:n])
		c.tn = min(c.tn+n, len(c.tail))
	}
	return n, err
}

// tailZero reports whether the last 512 bytes read were all zero.
func (c *countingReader) tailZero() bool {
	if c.tn < len(c.tail) {
		return false
	}
	for _, b := range c.tail {
		if b != 0 {
			return false
		}
	}
	return true
}

// stream is a file (or byte slice) read sequentially, gunzipped when it
// starts with the gzip magic number.
type stream struct {
	name   string // for messages
	closer io.Closer
	raw    *countingReader // bytes taken from the file
	size   int64           // file size, -1 if unknown
	gz     *gzip.Reader    // nil if not compressed
	pos    *countingReader // the uncompressed data
}

// openStream opens a file for sequential reading; reads fail once ctx is
// done.
func openStream(ctx context.Context, name string) (*stream, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	size := int64(-1)
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	s, err := newStream(name, ctxReader{ctx, f}, size)
	if err != nil {
		f.Close()
		return nil, err
	}
	s.closer = f
	return s, nil
}

func newStream(name string, r io.Reader, size int64) (*stream, error) {
	s := &stream{name: name, size: size, raw: &countingReader{r: r}}
	br := bufio.NewReaderSize(s.raw, 64<<10)
	magic, _ := br.Peek(2)
	var data io.Reader = br
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, ioErr(name, "gzip header", err)
		}
		s.gz = gz
		data = &inflateGuard{r: gz, raw: s.raw}
	}
	s.pos = &countingReader{r: data}
	return s, nil
}

func (s *stream) Read(p []byte) (int, error) { return s.pos.Read(p) }

// inflateGuard stops a gzip stream that inflates beyond inflateFloor plus
// maxInflation times the compressed bytes read (a gzip bomb: a few MB of
// zeros that inflate to many GB).
type inflateGuard struct {
	r   io.Reader
	raw *countingReader
	n   int64
}

func (g *inflateGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	g.n += int64(n)
	if g.n > inflateFloor+maxInflation*g.raw.n {
		return n, fmt.Errorf("the gzip data inflates to more than %d bytes from %d compressed (over %d times): a gzip bomb? refusing it", g.n, g.raw.n, maxInflation)
	}
	return n, err
}

func (s *stream) Close() error {
	if s.closer != nil {
		return s.closer.Close()
	}
	return nil
}

// rawPos describes how far into the file reading got, for error messages.
func (s *stream) rawPos() string {
	if s.gz == nil {
		return ""
	}
	if s.size >= 0 {
		return fmt.Sprintf(", %d of %d compressed bytes read", s.raw.n, s.size)
	}
	return fmt.Sprintf(", %d compressed bytes read", s.raw.n)
}

// drain reads the rest of a gzip stream so that its checksum is verified.
func (s *stream) drain(log *slog.Logger) error {
	if s.gz == nil {
		return nil
	}
	_, err := io.Copy(io.Discard, s.pos)
	if errors.Is(err, gzip.ErrHeader) {
		// Data after the gzip member: the archive itself is complete.
		log.Warn("datasets: ignoring trailing data after the gzip stream", "file", s.name)
		return nil
	}
	if err != nil {
		return ioErr(s.name, fmt.Sprintf("at uncompressed byte %d%s", s.pos.n, s.rawPos()), err)
	}
	return nil
}

// tarStream walks the members of a tar or tar.gz file.
type tarStream struct {
	*stream
	tr     *tar.Reader
	hdr    *tar.Header
	member string // cleaned name of the current member
	start  int64  // uncompressed offset of the current member's data
}

func openTar(ctx context.Context, name string) (*tarStream, error) {
	s, err := openStream(ctx, name)
	if err != nil {
		return nil, err
	}
	return &tarStream{stream: s, tr: tar.NewReader(s.pos)}, nil
}

func newTar(name string, r io.Reader, size int64) (*tarStream, error) {
	s, err := newStream(name, r, size)
	if err != nil {
		return nil, err
	}
	return &tarStream{stream: s, tr: tar.NewReader(s.pos)}, nil
}

// next advances to the next member. It returns io.EOF at a proper end of the
// archive and an error wrapping ErrCorrupt for a damaged or truncated one.
func (t *tarStream) next() (*tar.Header, error) {
	prev := t.member
	hdr, err := t.tr.Next()
	if err == io.EOF {
		if t.pos.n == 0 {
			return nil, corrupt(t.name, "", errors.New("the archive is empty"))
		}
		if !t.pos.tailZero() {
			where := "after member " + prev
			if prev == "" {
				where = "at the start"
			}
			return nil, corrupt(t.name, fmt.Sprintf("%s (uncompressed byte %d%s)", where, t.pos.n, t.rawPos()),
				errors.New("the archive ends without its end-of-archive marker"))
		}
		return nil, io.EOF
	}
	if err != nil {
		var where string
		switch {
		case prev == "":
			where = fmt.Sprintf("reading the first header%s", t.rawPos())
		case t.hdr != nil && t.pos.n < t.start+t.hdr.Size:
			// The reader was skipping the rest of the previous member.
			where = fmt.Sprintf("member %s at byte %d of %d (uncompressed archive byte %d%s)",
				prev, t.pos.n-t.start, t.hdr.Size, t.pos.n, t.rawPos())
		default:
			where = fmt.Sprintf("reading the header after member %s at uncompressed byte %d%s", prev, t.pos.n, t.rawPos())
		}
		return nil, ioErr(t.name, where, err)
	}
	t.hdr = hdr
	t.member = hdr.Name
	t.start = t.pos.n
	return hdr, nil
}

// memberErr describes an error met reading the current member's data.
func (t *tarStream) memberErr(err error) error {
	where := fmt.Sprintf("member %s at byte %d of %d (uncompressed archive byte %d%s)",
		t.member, t.pos.n-t.start, t.hdr.Size, t.pos.n, t.rawPos())
	return ioErr(t.name, where, err)
}

// readMember reads the whole current member, at most limit bytes.
func (t *tarStream) readMember(limit int64) ([]byte, error) {
	if t.hdr.Size > limit {
		return nil, fmt.Errorf("datasets: read %s: member %s is %d bytes, more than the %d allowed", t.name, t.member, t.hdr.Size, limit)
	}
	buf := make([]byte, t.hdr.Size)
	if _, err := io.ReadFull(t.tr, buf); err != nil {
		return nil, t.memberErr(err)
	}
	return buf, nil
}

// isRegular reports whether a tar header holds file data.
func isRegular(h *tar.Header) bool {
	return h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeGNUSparse
}

// cleanMember normalises an archive member name to a slash-separated
// relative path. It returns "" for the archive's root ("./") and for names
// that cannot be used safely (see memberName); readers of image layouts call
// memberName instead, which refuses the latter.
func cleanMember(name string) string {
	c, err := memberName("", name)
	if err != nil {
		return ""
	}
	return c
}

// memberName normalises the member name of archive to a slash-separated
// relative path ("" for the archive's root, "./"). An absolute name
// ("/data/imgs/x.png") or one that climbs out with ".." is an error naming
// the member: dropping its leading "/" would shift the <split>/<class>
// levels and every label with them, and ".." points outside the archive.
func memberName(archive, name string) (string, error) {
	name = strings.ReplaceAll(name, "\\", "/")
	c := path.Clean(name)
	switch {
	case name == "" || c == "." || c == "/":
		return "", nil
	case strings.HasPrefix(c, "/"):
		return "", fmt.Errorf("datasets: read %s: member %q is an absolute path: igpt reads only relative member names; repack the archive from inside its folder (tar -C DIR -cf x.tar . or cd DIR && zip -r x.zip .)", archive, name)
	case c == ".." || strings.HasPrefix(c, "../"):
		return "", fmt.Errorf("datasets: read %s: member %q climbs out of the archive with \"..\": igpt reads only members inside it; repack the archive without it", archive, name)
	}
	return c, nil
}

// readNames parses a class-name file: one name a line, blank lines and
// surrounding space dropped, read with the shared line cap (EachLine).
// name names the file in errors.
func readNames(name string, b []byte) ([]string, error) {
	var names []string
	err := EachLine(bytes.NewReader(b), name, MaxTextLine, func(_ int, line []byte) error {
		if s := strings.TrimSpace(string(line)); s != "" {
			names = append(names, s)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return normalizeClasses(name, names)
}

// maxNamesFile bounds the size of class-name files read into memory.
const maxNamesFile = 1 << 20
