package datasets

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/igpt/igpt/internal/storage"
)

// inspectNPZ makes one unit per batch file of the downsampled ImageNet:
// train_data_batch_*.npz is train, val_data.npz is test (the official
// validation set serves as the test split, as in the paper).
func inspectNPZ(ctx context.Context, spec Spec, src string) (Layout, error) {
	files, err := sourceFiles(ctx, src)
	if err != nil {
		return Layout{}, err
	}
	var l Layout
	for _, f := range files {
		base := storage.Base(f.Path)
		var split string
		switch {
		case !strings.HasSuffix(base, ".npz"):
			continue
		case strings.HasPrefix(base, "train"):
			split = "train"
		case strings.HasPrefix(base, "val"), strings.HasPrefix(base, "test"):
			split = "test"
		default:
			return Layout{}, fmt.Errorf("datasets: %s: %s is neither train_data_batch_N.npz nor val_data.npz", spec.Name, f.Path)
		}
		l.Units = append(l.Units, Unit{Format: FormatNPZ, Split: split, Path: f.Path, Size: f.Size})
	}
	if len(l.Units) == 0 {
		return Layout{}, fmt.Errorf("datasets: %s: %s holds no .npz batch files (unzip the official Imagenet%dx%d_*_npz.zip files there)", spec.Name, src, spec.H, spec.W)
	}
	l.Classes = imageNetIndexClasses()
	for i := range l.Units {
		l.Units[i].Classes = l.Classes
	}
	return l, nil
}

// imageNetIndexClasses names the downsampled ImageNet's labels 1 … 1000
// (stored as 0 … 999) by their number: the files carry no class names.
func imageNetIndexClasses() []string {
	c := make([]string, 1000)
	for i := range c {
		c[i] = strconv.Itoa(i + 1)
	}
	return c
}

// readNPZUnit streams the images of one batch file: labels first (N
// integers), then the data rows one at a time.
func readNPZUnit(ctx context.Context, u Unit, emit func(Item) error) error {
	ra, err := storage.OpenReaderAt(ctx, u.Path)
	if err != nil {
		return err
	}
	defer ra.Close()
	zr, err := zip.NewReader(ra, ra.Size())
	if err != nil {
		return corrupt(u.Path, "zip directory", err)
	}
	labels, err := readNPYLabels(u.Path, zr)
	if err != nil {
		return err
	}
	f := npzMember(zr, "data")
	if f == nil {
		return corrupt(u.Path, "", errors.New("no data.npy in it"))
	}
	rc, err := f.Open()
	if err != nil {
		return corrupt(u.Path, "member data.npy", err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(ctxReader{ctx, rc}, 1<<20)
	hdr, err := readNPYHeader(br)
	if err != nil {
		return corrupt(u.Path, "member data.npy header", err)
	}
	if hdr.descr != "|u1" || len(hdr.shape) != 2 || hdr.fortran {
		return corrupt(u.Path, "member data.npy", fmt.Errorf("want a C-order uint8 array of shape (N, 3·S·S), got %s %v", hdr.descr, hdr.shape))
	}
	n, row := hdr.shape[0], hdr.shape[1]
	side := 0
	if row <= 3*maxNPZSide*maxNPZSide {
		side = npzSide(row)
	}
	if side == 0 {
		return corrupt(u.Path, "member data.npy", fmt.Errorf("rows of %d values are not 3·S·S", row))
	}
	if n != len(labels) {
		return corrupt(u.Path, "", fmt.Errorf("data.npy has %d rows but labels.npy %d labels", n, len(labels)))
	}
	keys := unitKeySpace(u)
	buf := make([]byte, row)
	for i := range n {
		if _, err := io.ReadFull(br, buf); err != nil {
			return ioErr(u.Path, fmt.Sprintf("member data.npy row %d of %d", i, n), err)
		}
		pix := planarToHWC(buf, side*side)
		it := Item{Key: fmt.Sprintf("%s/%07d", keys, i), Split: u.Split, Label: labels[i],
			Source: fmt.Sprintf("%s row %d", u.Path, i), H: side, W: side, C: 3, Pix: pix}
		if err := emit(it); err != nil {
			return err
		}
	}
	return nil
}

// maxNPZSide bounds the side of a downsampled image (the files hold 8 to 64).
const maxNPZSide = 1024

// npzSide returns S for a row of 3·S·S values, or 0.
func npzSide(row int) int {
	for s := 1; 3*s*s <= row; s++ {
		if 3*s*s == row {
			return s
		}
	}
	return 0
}

// planarToHWC turns R, G, B planes of n pixels into interleaved RGB.
func planarToHWC(planes []byte, n int) []byte {
	pix := make([]byte, 3*n)
	for i := range n {
		pix[3*i] = planes[i]
		pix[3*i+1] = planes[n+i]
		pix[3*i+2] = planes[2*n+i]
	}
	return pix
}

func npzMember(zr *zip.Reader, name string) *zip.File {
	for _, f := range zr.File {
		if f.Name == name+".npy" || f.Name == name {
			return f
		}
	}
	return nil
}

// maxNPYLabels bounds a labels array read into memory.
const maxNPYLabels = 1 << 24

// readNPYLabels reads labels.npy (integers 1 … 1000) as labels 0 … 999.
func readNPYLabels(file string, zr *zip.Reader) ([]int, error) {
	f := npzMember(zr, "labels")
	if f == nil {
		return nil, corrupt(file, "", errors.New("no labels.npy in it"))
	}
	rc, err := f.Open()
	if err != nil {
		return nil, corrupt(file, "member labels.npy", err)
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	hdr, err := readNPYHeader(br)
	if err != nil {
		return nil, corrupt(file, "member labels.npy header", err)
	}
	size := map[string]int{"<i8": 8, "<i4": 4, "<i2": 2, "|u1": 1, "<u2": 2, "<u4": 4, "<u8": 8}[hdr.descr]
	if size == 0 || len(hdr.shape) != 1 || hdr.shape[0] > maxNPYLabels {
		return nil, corrupt(file, "member labels.npy", fmt.Errorf("want a 1-D integer array, got %s %v", hdr.descr, hdr.shape))
	}
	raw := make([]byte, hdr.shape[0]*size)
	if _, err := io.ReadFull(br, raw); err != nil {
		return nil, ioErr(file, "member labels.npy", err)
	}
	labels := make([]int, hdr.shape[0])
	for i := range labels {
		var v uint64
		switch size {
		case 1:
			v = uint64(raw[i])
		case 2:
			v = uint64(binary.LittleEndian.Uint16(raw[2*i:]))
		case 4:
			v = uint64(binary.LittleEndian.Uint32(raw[4*i:]))
		case 8:
			v = binary.LittleEndian.Uint64(raw[8*i:])
		}
		if err := checkLabel(fmt.Sprintf("%s: member labels.npy entry %d", file, i), int64(v), 1, 1000); err != nil {
			return nil, err
		}
		labels[i] = int(v) - 1
	}
	return labels, nil
}

// npyHeader is what igpt uses of a .npy header.
type npyHeader struct {
	descr   string
	fortran bool
	shape   []int
}

var (
	npyDescr   = regexp.MustCompile(`'descr':\s*'([^']*)'`)
	npyFortran = regexp.MustCompile(`'fortran_order':\s*(True|False)`)
	npyShape   = regexp.MustCompile(`'shape':\s*\(([^)]*)\)`)
)

// maxNPYHeader bounds the header dictionary's length.
const maxNPYHeader = 1 << 16

// readNPYHeader reads a .npy header (format versions 1–3).
func readNPYHeader(r io.Reader) (npyHeader, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return npyHeader{}, err
	}
	if !bytes.Equal(pre[:6], []byte("\x93NUMPY")) {
		return npyHeader{}, errors.New("not a .npy array (bad magic)")
	}
	var hlen int
	switch pre[6] {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return npyHeader{}, err
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return npyHeader{}, err
		}
		hlen = int(binary.LittleEndian.Uint32(b[:]))
	default:
		return npyHeader{}, fmt.Errorf(".npy format version %d is not supported", pre[6])
	}
	if hlen > maxNPYHeader {
		return npyHeader{}, fmt.Errorf(".npy header of %d bytes is too long", hlen)
	}
	dict := make([]byte, hlen)
	if _, err := io.ReadFull(r, dict); err != nil {
		return npyHeader{}, err
	}
	return parseNPYDict(string(dict))
}

func parseNPYDict(d string) (npyHeader, error) {
	var h npyHeader
	m := npyDescr.FindStringSubmatch(d)
	s := npyShape.FindStringSubmatch(d)
	if m == nil || s == nil {
		return h, fmt.Errorf(".npy header %q lacks descr or shape", d)
	}
	h.descr = m[1]
	if f := npyFortran.FindStringSubmatch(d); f != nil {
		h.fortran = f[1] == "True"
	}
	for part := range strings.SplitSeq(s[1], ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		v, err := strconv.Atoi(strings.TrimSuffix(part, "L"))
		if err != nil || v < 0 || v > 1<<40 {
			return h, fmt.Errorf(".npy header: bad dimension %q", part)
		}
		h.shape = append(h.shape, v)
	}
	return h, nil
}
