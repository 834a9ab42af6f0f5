package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/stages"
)

// Inspect prints what is at path: for a shard, its header, record count
// (every frame is read and checked) and its first n records; for a stage
// folder, its manifest.
func Inspect(ctx context.Context, path string, n int, w io.Writer) error {
	if m, err := stages.ReadManifest(ctx, strings.TrimSuffix(path, "/")); err == nil {
		b, _ := json.MarshalIndent(m, "", "  ")
		fmt.Fprintf(w, "%s\n", b)
		return nil
	} else if !errors.Is(err, storage.ErrNotExist) {
		return err
	}
	rc, err := storage.OpenUserFile(ctx, path, 0) // a shard: streamed, any size
	if err != nil {
		return err
	}
	defer rc.Close()
	r, err := records.NewReader(rc, path)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "file:    %s\nformat:  %s v%d\nkind:    %s\n", path, r.Header.Format, r.Header.Version, r.Header.Kind)
	count := 0
	var shown []string
	for {
		line, err := nextSummary(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if count < n {
			shown = append(shown, line)
		}
		count++
	}
	fmt.Fprintf(w, "records: %d\nbytes:   %d\n", count, r.Offset())
	for i, s := range shown {
		fmt.Fprintf(w, "[%d] %s\n", i, s)
	}
	return nil
}

// nextSummary reads one record and describes it on one line.
func nextSummary(r *records.Reader) (string, error) {
	switch r.Kind() {
	case records.KindImage:
		var x records.Image
		if err := r.Next(&x); err != nil {
			return "", err
		}
		return fmt.Sprintf("key=%s label=%d h=%d w=%d c=%d pix[:12]=%v", x.Key, x.Label, x.H, x.W, x.C, x.Pix[:min(12, len(x.Pix))]), nil
	case records.KindTokens:
		var x records.Tokens
		if err := r.Next(&x); err != nil {
			return "", err
		}
		return fmt.Sprintf("key=%s label=%d h=%d w=%d vocab=%d tok[:12]=%v", x.Key, x.Label, x.H, x.W, x.Vocab, x.Tok[:min(12, len(x.Tok))]), nil
	default:
		var x records.Features
		if err := r.Next(&x); err != nil {
			return "", err
		}
		return fmt.Sprintf("key=%s label=%d layer=%d dim=%d vec[:6]=%v", x.Key, x.Label, x.Layer, len(x.Vec), x.Vec[:min(6, len(x.Vec))]), nil
	}
}
