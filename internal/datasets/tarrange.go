package datasets

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/igpt/igpt/internal/storage"
)

// A flat tar too big for one work item (ImageNet's 6.4 GB validation tar
// holds 50,000 images) is cut at plan time into byte ranges of about
// TarRangeBytes, without reading it: a unit owns the members whose header
// starts in [RangeStart, RangeEnd). Its worker reads from a little before
// RangeStart (tarRangeLookback), finds the first tar header there by its
// magic and checksum, and walks the archive from it, skipping the members
// that start before its range and stopping at the first that starts at or
// past its end. Every member is read by exactly one unit.
//
// The header found first could in principle be a block of file data that
// happens to carry "ustar" and a matching checksum, or the file header of
// a PAX record that began before the lookback; a member of an uncompressed
// tar is found by the walk from any true header before it, so the
// lookback (1 MiB, against ImageNet's ~130 KB images) makes the first case
// irrelevant and the second needs a PAX record longer than the lookback.

// TarRangeBytes is the size of the byte range one unit of a split tar
// reads: 128 MiB cuts ImageNet's validation tar into 50 units.
var TarRangeBytes int64 = 128 << 20

// tarRangeLookback is how far before its range a unit starts looking for
// a header.
var tarRangeLookback int64 = 1 << 20

// splitTarRange cuts a unit reading a whole uncompressed tar of size bytes
// into units of TarRangeBytes each; a tar that fits one range stays whole.
func splitTarRange(u Unit, size int64) []Unit {
	if size <= TarRangeBytes {
		return []Unit{u}
	}
	var out []Unit
	for start := int64(0); start < size; start += TarRangeBytes {
		r := u
		r.RangeStart, r.RangeEnd = start, min(size, start+TarRangeBytes)
		out = append(out, r)
	}
	return out
}

// isTarHeader reports whether a 512-byte block is a ustar/GNU tar header:
// the magic at 257 and a checksum that matches.
func isTarHeader(b []byte) bool {
	if len(b) < 512 || !bytes.HasPrefix(b[257:], []byte("ustar")) {
		return false
	}
	field := bytes.TrimRight(bytes.TrimLeft(b[148:156], " "), " \x00")
	want, err := strconv.ParseInt(string(field), 8, 64)
	if err != nil {
		return false
	}
	var sum int64
	for i, c := range b[:512] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	return sum == want
}

// eachTarRangeImage calls fn with every image member of the tar at u.Path
// whose header starts in [u.RangeStart, u.RangeEnd), in archive order.
func eachTarRangeImage(ctx context.Context, u Unit, fn func(name string, data []byte) error) error {
	from := max(0, u.RangeStart-tarRangeLookback) &^ 511
	rc, err := storage.OpenRange(ctx, u.Path, from, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(ctxReader{ctx, rc}, 1<<20)
	pos := from // absolute offset of br's next byte
	if u.RangeStart > 0 {
		for {
			blk, err := br.Peek(512)
			if err == io.EOF || (err == nil && pos >= u.RangeEnd) {
				return nil // no member starts in the range
			}
			if err != nil {
				return ioErr(u.Path, fmt.Sprintf("looking for a tar header from byte %d", pos), err)
			}
			if isTarHeader(blk) {
				break
			}
			br.Discard(512)
			pos += 512
		}
	}
	name := fmt.Sprintf("%s (bytes %d–%d)", u.Path, u.RangeStart, u.RangeEnd)
	t, err := newTar(name, br, -1)
	if err != nil {
		return err
	}
	next := pos // where the next member's header (chain) starts
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if next >= u.RangeEnd {
			return nil
		}
		chain := next
		hdr, err := t.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		next = pos + t.start + (hdr.Size+511)&^511
		if chain < u.RangeStart {
			continue // the unit before this one reads it
		}
		if err := t.image(ctx, hdr, fn); err != nil {
			return err
		}
	}
}
