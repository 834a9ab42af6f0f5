package pipelines

// The download pipeline's cases of issue 29, round two
// (docs/reliability.md).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/datasets"
)

// folderOfClasses writes a <split>/<class>/<image> folder of n classes of
// one 1×1 PNG each and returns it inspected.
func folderOfClasses(t testing.TB, n int) datasets.Layout {
	t.Helper()
	dir := t.TempDir()
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		d := filepath.Join(dir, "train", fmt.Sprintf("class-%05d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "x.png"), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := datasets.Inspect(context.Background(), datasets.Spec{Name: "folder", Format: datasets.FormatFolder}, dir, datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func tasksOf(units []datasets.Unit) []UnitTask {
	tasks := make([]UnitTask, len(units))
	for i, u := range units {
		tasks[i] = UnitTask{Index: i, Unit: u}
	}
	return tasks
}

// TestReliability29_5_UnitListLinear: a folder of 10,000 classes × 1 image
// ran out of memory writing _units.jsonl, which repeated every class name
// in every unit (units × classes). The unit list and its class table now
// grow as units + classes: ten times the classes (and units) give about
// ten times the bytes, not a hundred; and the units read back with the
// table label their images as before.
func TestReliability29_5_UnitListLinear(t *testing.T) {
	ctx := context.Background()
	size := map[int]int64{}
	for _, n := range []int{100, 1000} {
		l := folderOfClasses(t, n)
		dir := t.TempDir()
		units, classes := filepath.Join(dir, "_units.jsonl"), filepath.Join(dir, "_classes.jsonl")
		if err := WriteUnits(ctx, units, classes, tasksOf(l.Units), l.Classes); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{units, classes} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			size[n] += fi.Size()
		}
		// Read back: every unit gets the table and labels its image as the
		// layout does.
		table, err := ReadClassTable(ctx, classes)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		if err := (&ReadLinesFn{}).ProcessElement(ctx, units, func(s string) { lines = append(lines, s) }); err != nil {
			t.Fatal(err)
		}
		if len(lines) != len(l.Units) {
			t.Fatalf("%d unit lines, want %d", len(lines), len(l.Units))
		}
		for i, line := range lines[:3] {
			task, err := DecodeUnitTask([]byte(line), table)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(task.Unit.Classes, l.Classes) {
				t.Fatalf("unit %d read back with %d classes, want the layout's %d", i, len(task.Unit.Classes), len(l.Classes))
			}
			var labels []int
			if err := datasets.ReadUnit(ctx, task.Unit, func(it datasets.Item) error { labels = append(labels, it.Label); return nil }); err != nil {
				t.Fatal(err)
			}
			if want := slices.Index(l.Classes, fmt.Sprintf("class-%05d", i)); !slices.Equal(labels, []int{want}) {
				t.Fatalf("unit %d labels %v, want [%d]", i, labels, want)
			}
		}
	}
	if ratio := float64(size[1000]) / float64(size[100]); ratio > 15 {
		t.Errorf("unit list and class table: %d bytes at 100 classes, %d at 1000 (×%.0f): they grow as units × classes, want units + classes (×~10)", size[100], size[1000], ratio)
	}
}

// TestReliability29_5_PreviousUnitList: a unit list written before the
// class table (each unit carrying its class names) still reads, without a
// table; a unit that names no classes and has no table is refused saying
// to rerun.
func TestReliability29_5_PreviousUnitList(t *testing.T) {
	l := folderOfClasses(t, 3)
	old, err := json.Marshal(UnitTask{Index: 1, Unit: l.Units[1]})
	if err != nil {
		t.Fatal(err)
	}
	task, err := DecodeUnitTask(old, nil)
	if err != nil || !slices.Equal(task.Unit.Classes, l.Classes) {
		t.Fatalf("previous-format unit: %v, classes %v; want %v", err, task.Unit.Classes, l.Classes)
	}
	u := l.Units[1]
	u.Classes = nil
	bare, _ := json.Marshal(UnitTask{Index: 1, Unit: u})
	if _, err := DecodeUnitTask(bare, nil); err == nil || !strings.Contains(err.Error(), "rerun the download stage") {
		t.Fatalf("a unit without classes and no table: err = %v, want a rerun hint", err)
	}
}

// FuzzUnitList: the unit-list reader (one line, with and without a class
// table) and the class-table reader never panic, and accept no negative
// index or count.
func FuzzUnitList(f *testing.F) {
	l := folderOfClasses(f, 2)
	for _, u := range l.Units {
		line, _ := json.Marshal(UnitTask{Index: 0, Unit: u})
		f.Add(line, []byte("\"class-00000\"\n\"class-00001\"\n"))
	}
	f.Add([]byte(`{"index":-1,"unit":{"Format":"folder","Split":"train"}}`), []byte("\"a\"\n\"a\"\n"))
	f.Add([]byte(`{"index":0,"unit":{"Format":"imagenet","Split":"train","Class":"n0"}}`), []byte("\"n0\"\nnot json\n"))
	f.Fuzz(func(t *testing.T, line, classes []byte) {
		table, err := datasets.ReadClassTable(bytes.NewReader(classes), "_classes.jsonl")
		if err != nil {
			table = nil
		}
		task, err := DecodeUnitTask(line, table)
		if err != nil {
			return
		}
		if task.Index < 0 || task.Unit.FirstIndex < 0 || task.Unit.Count < 0 {
			t.Fatalf("accepted a negative index: %+v", task)
		}
	})
}
