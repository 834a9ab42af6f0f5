package storage

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/igpt/igpt/internal/testutil"
)

// garbledLocks are lock bodies no live holder writes: random bytes, not
// JSON, or JSON without a pid, a host or a token.
var garbledLocks = map[string]string{
	"random bytes": "\x8f\x01\xfe\x00garbage\xff",
	"empty":        "",
	"empty object": "{}",
	"no pid":       `{"host":"h","time":"2020-01-01T00:00:00Z","token":"t"}`,
	"pid 0":        `{"pid":0,"host":"h","token":"t"}`,
	"no host":      `{"pid":12,"token":"t"}`,
	"no token":     `{"pid":12,"host":"h"}`,
	"truncated":    `{"pid":12,"ho`,
	"wrong type":   `{"pid":"12","host":"h","token":"t"}`,
	"json array":   `[1,2,3]`,
	"negative pid": `{"pid":-4,"host":"h","token":"t"}`,
	"empty host":   `{"pid":12,"host":"","token":"t"}`,
}

// TestReliability29_13_GarbledLockStale: a garbled lock, freshly written,
// is stale at once and taken over, locally and on GCS, where igpt waited
// 5 minutes on "pid 0 on ?".
func TestReliability29_13_GarbledLockStale(t *testing.T) {
	ctx := context.Background()
	testutil.FakeGCS(t, "bkt")
	opt := LockOptions{Heartbeat: time.Hour, StaleAfter: time.Hour, Poll: time.Millisecond}
	for name, body := range garbledLocks {
		for _, where := range []string{"local", "gcs"} {
			t.Run(name+" "+where, func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "0123456789ab.lock")
				if where == "gcs" {
					p = "gs://bkt/" + filepath.Base(filepath.Dir(p)) + "/0123456789ab.lock"
					if err := WriteFile(ctx, p, []byte(body)); err != nil {
						t.Fatal(err)
					}
				} else if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
				l, err := TryLock(ctx, p, opt)
				if err != nil {
					t.Fatalf("a fresh garbled lock %q was not taken over: %v", body, err)
				}
				if err := l.Release(ctx); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// FuzzReadLockInfo: no lock body makes the parser panic, and what it
// accepts names a holder (pid, host, token); anything else is stale.
func FuzzReadLockInfo(f *testing.F) {
	for _, b := range garbledLocks {
		f.Add([]byte(b))
	}
	f.Add([]byte(`{"pid":12,"host":"h","time":"2020-01-01T00:00:00Z","token":"t"}`))
	l := &Lock{opt: LockOptions{}.withDefaults()}
	f.Fuzz(func(t *testing.T, b []byte) {
		i := readLockInfo(b)
		if i == nil {
			if !l.stale(i, time.Now()) {
				t.Fatalf("garbled lock %q is not stale", b)
			}
			return
		}
		if i.PID <= 0 || i.Host == "" || i.Token == "" {
			t.Fatalf("accepted %q as %+v", b, i)
		}
	})
}
