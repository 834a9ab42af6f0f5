package datasets

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"golang.org/x/text/unicode/norm"
)

// MaxClasses bounds the classes of a source (ImageNet-21k has 21,841,
// iNaturalist 10,000): a class table, and a label read from a file, above
// it is refused before anything is allocated for it.
const MaxClasses = 1 << 20

// ClassTable is a source's class names (label = index) with their index.
// The download stage writes it once beside the unit list, and the units
// reference it instead of each carrying the names, so the list grows as
// units + classes, not units × classes.
type ClassTable struct {
	Names []string
	index map[string]int
}

// NewClassTable indexes names, refusing more than MaxClasses and a name
// given twice. name names the table in errors.
func NewClassTable(name string, names []string) (*ClassTable, error) {
	if len(names) > MaxClasses {
		return nil, fmt.Errorf("datasets: class table %s: %d classes, more than the %d allowed", name, len(names), MaxClasses)
	}
	t := &ClassTable{Names: names, index: make(map[string]int, len(names))}
	for i, c := range names {
		if j, dup := t.index[c]; dup {
			return nil, fmt.Errorf("datasets: class table %s: class %q is both label %d and label %d: %w", name, clip(c), j, i, ErrCorrupt)
		}
		t.index[c] = i
	}
	return t, nil
}

// Label returns the label of a class name.
func (t *ClassTable) Label(class string) (int, bool) {
	l, ok := t.index[class]
	return l, ok
}

// WriteClassTable writes names one JSON string a line, label order.
func WriteClassTable(w io.Writer, names []string) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, c := range names {
		if err := enc.Encode(c); err != nil {
			return err
		}
		if b.Len() > 1<<20 {
			if _, err := w.Write(b.Bytes()); err != nil {
				return err
			}
			b.Reset()
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// ReadClassTable reads what WriteClassTable wrote, through the shared line
// reader: a line is one JSON string; name names the file in errors.
func ReadClassTable(r io.Reader, name string) (*ClassTable, error) {
	var names []string
	err := EachLine(r, name, MaxTextLine, func(n int, line []byte) error {
		if len(names) >= MaxClasses {
			return fmt.Errorf("datasets: read %s: more than %d classes: %w", name, MaxClasses, ErrCorrupt)
		}
		var c string
		if err := json.Unmarshal(line, &c); err != nil {
			return fmt.Errorf("datasets: read %s: line %d is not a JSON string (a class name): %w: %w", name, n, err, ErrCorrupt)
		}
		names = append(names, c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return NewClassTable(name, names)
}

// UseClasses gives u the class table t: its names and their index, shared
// with every unit that uses t.
func (u *Unit) UseClasses(t *ClassTable) {
	u.Classes, u.index = t.Names, t.index
}

// labelIndex maps the unit's class names to labels: the class table's index
// when the unit has one, else one built from u.Classes.
func (u *Unit) labelIndex() map[string]int {
	if u.index == nil {
		u.index = classIndex(u.Classes)
	}
	return u.index
}

// labelBound is the number of labels the records of u may carry: its class
// count, or MaxClasses for a source without class names (WebDataset's .cls
// integers, numbered by the download stage).
func (u *Unit) labelBound() int {
	if len(u.Classes) > 0 {
		return len(u.Classes)
	}
	return MaxClasses
}

// checkLabel refuses a label read from a file that is not one of the n
// classes, numbered from base (0, or 1 in STL-10 and the npz files),
// naming where it was read: every reader checks the labels it reads here,
// before a label sizes or indexes anything.
func checkLabel(where string, label int64, base, n int) error {
	if label < int64(base) || label-int64(base) >= int64(n) {
		return fmt.Errorf("datasets: read %s: label %d is outside %d … %d (the %d classes): %w", where, label, base, base+n-1, n, ErrCorrupt)
	}
	return nil
}

// LabelOf returns the label of a class name among the unit's classes.
func (u *Unit) LabelOf(class string) (int, bool) {
	l, ok := u.labelIndex()[class]
	return l, ok
}

// normalizeClasses is the one check of class names, for every source that
// names its classes (folder trees, class-name files, ImageNet's class
// tars): each name is NFC-normalised, and two names that are the same
// after it (café written NFC and NFD) or that differ only in case (Cat,
// cat) are refused naming both: they would be two classes of one thing,
// and a probe would train and test on disjoint labels. where names the
// source in the error. The names come back NFC, in the given order.
func normalizeClasses(where string, raw []string) ([]string, error) {
	out := make([]string, len(raw))
	byNFC := make(map[string]string, len(raw))
	byFold := make(map[string]string, len(raw))
	for i, r := range raw {
		n := norm.NFC.String(r)
		if prev, dup := byNFC[n]; dup {
			return nil, fmt.Errorf("datasets: %s: classes %q and %q are the same name in two Unicode forms (NFC and NFD): rename one folder or line so each class is spelt once: %w", where, prev, r, ErrDuplicate)
		}
		byNFC[n] = r
		f := strings.ToLower(n)
		if prev, dup := byFold[f]; dup {
			return nil, fmt.Errorf("datasets: %s: classes %q and %q differ only in case: igpt refuses them (on a case-insensitive disk they are one folder); merge or rename one: %w", where, prev, r, ErrDuplicate)
		}
		byFold[f] = r
		out[i] = n
	}
	return out, nil
}
