package stages

// The download stage's cases of issue 29, round two (docs/reliability.md).

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// wdsShard is a WebDataset tar of the given members.
func wdsShard(t *testing.T, members map[string][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, name := range []string{"000001.png", "000001.cls"} {
		data, ok := members[name]
		if !ok {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestReliability29_6_EmptySplit: a WebDataset train shard set without a
// sample used to give a "done" download with no train split. Where the
// records are collected (checkSplitsRead, for every source), each split
// the source listed must have given records: the stage fails naming the
// split and writes no manifest.
func TestReliability29_6_EmptySplit(t *testing.T) {
	dir := t.TempDir()
	img := pngBytes(4, 4, 1)
	for name, data := range map[string][]byte{
		"train-000000.tar": wdsShard(t, map[string][]byte{}), // a tar without members
		"val-000000.tar":   wdsShard(t, map[string][]byte{"000001.png": img, "000001.cls": []byte("1")}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	yaml := fmt.Sprintf("root: %s\ndataset: {name: webdataset, splits: {train: %q, test: %q}}\n", t.TempDir(), dir+"/train-*.tar", dir+"/val-*.tar")
	st, err := runDownload(t, yaml, Options{})
	if err == nil {
		t.Fatalf("download of a train split without samples finished: %+v", st.Manifest)
	}
	if !strings.Contains(err.Error(), "split train (1 units read) gave no records") {
		t.Fatalf("err = %v, want it to name the empty train split", err)
	}
	if st.Manifest != nil {
		t.Errorf("a manifest was written for a download without a train split")
	}
}
