// Package loader streams Tokens records from shards as training batches in
// a seeded, exactly resumable order.
//
// Each epoch permutes the shard list with the seed and the epoch number,
// then reads the shards a group at a time (Options.Buffer shards per group)
// and permutes each group's records together: the shuffle buffer. A
// Position (epoch, group, record) says where the stream is; a loader
// created at a saved Position yields exactly the records the original would
// have yielded next.
package loader

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/igpt/igpt/internal/records"
)

// Position is where a stream is: the next record is record Record of the
// shuffled group Group of epoch Epoch.
type Position struct {
	Epoch  int `json:"epoch"`
	Group  int `json:"group"`
	Record int `json:"record"`
}

// Options configure a Loader.
type Options struct {
	Seed   uint64
	Buffer int // shards shuffled together; default 2
	// Vocab, when set, is the vocabulary every record must declare (the
	// palette's size); a record declaring another is an error naming it.
	Vocab int
}

// Loader yields Tokens records forever, epoch after epoch.
type Loader struct {
	files []string
	opt   Options
	pos   Position
	group []records.Tokens // the current group, shuffled
	ready bool
}

// New starts a loader over files at pos.
func New(files []string, opt Options, pos Position) (*Loader, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("loader: no shards to read")
	}
	if opt.Buffer <= 0 {
		opt.Buffer = 2
	}
	l := &Loader{files: files, opt: opt, pos: pos}
	// A resume position comes from a file (a checkpoint's state.json):
	// check it against the shards before it indexes anything.
	if pos.Epoch < 0 || pos.Group < 0 || pos.Group >= l.groups() || pos.Record < 0 {
		return nil, fmt.Errorf("loader: position %+v does not fit %d shards in %d groups of %d (want epoch >= 0, 0 <= group < %d, record >= 0)",
			pos, len(files), l.groups(), opt.Buffer, l.groups())
	}
	return l, nil
}

// Position returns the position of the next record.
func (l *Loader) Position() Position { return l.pos }

// Epoch is the epoch of the next record.
func (l *Loader) Epoch() int { return l.pos.Epoch }

func (l *Loader) groups() int { return (len(l.files) + l.opt.Buffer - 1) / l.opt.Buffer }

// load reads the current group's shards and shuffles their records.
func (l *Loader) load(ctx context.Context) error {
	order := rand.New(rand.NewPCG(l.opt.Seed, uint64(l.pos.Epoch))).Perm(len(l.files))
	lo := l.pos.Group * l.opt.Buffer
	hi := min(lo+l.opt.Buffer, len(l.files))
	l.group = l.group[:0]
	for _, i := range order[lo:hi] {
		if err := records.ScanFile(ctx, l.files[i], func(t records.Tokens) error {
			if l.opt.Vocab > 0 && t.Vocab != l.opt.Vocab {
				return fmt.Errorf("loader: %s: record %q declares vocab %d, the tokens' palette has %d colours", l.files[i], t.Key, t.Vocab, l.opt.Vocab)
			}
			l.group = append(l.group, t)
			return nil
		}); err != nil {
			return err
		}
	}
	rng := rand.New(rand.NewPCG(l.opt.Seed^0x9e3779b97f4a7c15, uint64(l.pos.Epoch)<<32|uint64(l.pos.Group)))
	rng.Shuffle(len(l.group), func(i, j int) { l.group[i], l.group[j] = l.group[j], l.group[i] })
	if l.pos.Record > len(l.group) {
		return fmt.Errorf("loader: resume position %+v is past the %d records of its group: the shards changed since the checkpoint", l.pos, len(l.group))
	}
	l.ready = true
	return nil
}

// Next returns the next record.
func (l *Loader) Next(ctx context.Context) (records.Tokens, error) {
	for empty := 0; !l.ready || l.pos.Record >= len(l.group); {
		if l.ready {
			l.advance() // an empty group
			if empty++; empty > l.groups() {
				return records.Tokens{}, fmt.Errorf("loader: the %d shards hold no records", len(l.files))
			}
		}
		if err := l.load(ctx); err != nil {
			return records.Tokens{}, err
		}
	}
	t := l.group[l.pos.Record]
	l.pos.Record++
	if l.pos.Record == len(l.group) {
		l.advance()
	}
	return t, nil
}

// advance moves the position to the start of the next group.
func (l *Loader) advance() {
	l.ready = false
	l.pos.Record = 0
	l.pos.Group++
	if l.pos.Group >= l.groups() {
		l.pos.Group = 0
		l.pos.Epoch++
	}
}

// Batch fills tok [B, T] with the next B records (each must have T tokens)
// and labels [B] with their labels.
func (l *Loader) Batch(ctx context.Context, tok []int32, labels []int32, B, T int) error {
	for b := 0; b < B; b++ {
		r, err := l.Next(ctx)
		if err != nil {
			return err
		}
		if len(r.Tok) != T {
			return fmt.Errorf("loader: record %s has %d tokens, the model's context is %d", r.Key, len(r.Tok), T)
		}
		for t, v := range r.Tok {
			tok[b*T+t] = int32(v)
		}
		if labels != nil {
			labels[b] = int32(r.Label)
		}
	}
	return nil
}

// ReadAll reads up to limit records (all if limit <= 0) of files in order:
// a fixed evaluation set.
func ReadAll(ctx context.Context, files []string, limit int) ([]records.Tokens, error) {
	var out []records.Tokens
	for _, f := range files {
		err := records.ScanFile(ctx, f, func(t records.Tokens) error {
			if limit > 0 && len(out) >= limit {
				return io.EOF
			}
			out = append(out, t)
			return nil
		})
		if err != nil {
			return nil, err
		}
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return out, nil
}
