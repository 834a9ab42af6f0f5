package datasets

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Line caps of the line-oriented files the sources and the download stage
// read. A label, synset or class-name line is tens of bytes; a unit-list
// line lists the members of one unit (a class folder: ~30 bytes an image).
const (
	// MaxTextLine bounds one line of a label file, synset list or
	// class-name file.
	MaxTextLine = 64 << 10
	// MaxListLine bounds one line of a unit list or class table the
	// download stage writes (a class folder of about two million images).
	MaxListLine = 64 << 20
)

// ErrLineTooLong is wrapped by EachLine's error for a line over its cap.
var ErrLineTooLong = errors.New("line too long")

// EachLine calls fn with every line of r, numbered from 1, without its
// line ending ("\n" or "\r\n"); a last line without one counts too. It is
// the one line reader of the sources (label files, synset lists,
// class-name files, unit lists, class tables): a line longer than max
// bytes is refused when its first max+1 bytes have been read, so a file
// that is one 1 GB line costs max bytes of memory, not a gigabyte. name
// names r in errors. fn's error is returned as is.
func EachLine(r io.Reader, name string, max int, fn func(n int, line []byte) error) error {
	br := bufio.NewReaderSize(r, min(max+1, 64<<10))
	var long []byte // a line longer than the buffer, gathered up to max
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(long)+len(line) > max {
				return fmt.Errorf("datasets: read %s: line %d is longer than %d bytes (is it the right file? a line holds one entry): %w", name, n, max, ErrLineTooLong)
			}
			long = append(long, line...)
			line, err = br.ReadSlice('\n')
		}
		if long != nil {
			line = append(long, line...)
			long = long[:0:0]
		}
		if len(line) > max+1 || (len(line) == max+1 && line[max] != '\n') {
			return fmt.Errorf("datasets: read %s: line %d is longer than %d bytes (is it the right file? a line holds one entry): %w", name, n, max, ErrLineTooLong)
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("datasets: read %s: line %d: %w", name, n, err)
		}
		if len(line) == 0 && err == io.EOF {
			return nil
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if ferr := fn(n, line); ferr != nil {
			return ferr
		}
		if err == io.EOF {
			return nil
		}
	}
}

// clip shortens s, a value quoted in an error message, to its first 80
// bytes: a message must not carry a damaged file's content.
func clip(s string) string {
	if len(s) <= 80 {
		return s
	}
	return s[:80] + fmt.Sprintf("… (%d bytes)", len(s))
}
