// Package testutil holds helpers shared by igpt's tests: an in-process GCS
// emulator and the location of the shared real datasets.
package testutil

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// FakeGCS starts an in-process fake-gcs-server on 127.0.0.1 with the given
// buckets, points STORAGE_EMULATOR_HOST at it for the rest of the test, and
// stops it at cleanup. Anything that creates a GCS client afterwards in this
// process (our storage package, Beam's gs:// filesystem, prism's in-process
// workers) talks to it.
func FakeGCS(t testing.TB, buckets ...string) *fakestorage.Server {
	t.Helper()
	srv, host, err := StartFakeGCS(buckets...)
	if err != nil {
		t.Fatalf("fake GCS: %v", err)
	}
	t.Cleanup(srv.Stop)
	t.Setenv("STORAGE_EMULATOR_HOST", host)
	return srv
}

// StartFakeGCS starts an in-process fake-gcs-server on a free port of
// 127.0.0.1 with the given buckets and returns it with its host:port, for
// STORAGE_EMULATOR_HOST (FakeGCS sets it for a test; bench/dataflow for
// its process). The caller stops it.
func StartFakeGCS(buckets ...string) (*fakestorage.Server, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	host := "127.0.0.1:" + strconv.Itoa(port)
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Scheme:     "http",
		Host:       "127.0.0.1",
		Port:       uint16(port),
		PublicHost: host,
	})
	if err != nil {
		return nil, "", err
	}
	for _, b := range buckets {
		srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
	}
	return srv, host, nil
}

// SharedData returns the path of ../shared/data (the real datasets), or
// skips the test with a clear message when it is absent. IGPT_SHARED_DATA
// overrides the location.
func SharedData(t testing.TB, parts ...string) string {
	t.Helper()
	dir := os.Getenv("IGPT_SHARED_DATA")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		// internal/testutil/testutil.go → repository root → ../shared/data
		dir = filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "data")
	}
	p := filepath.Join(append([]string{dir}, parts...)...)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("real dataset %s not found (set IGPT_SHARED_DATA to the shared data folder to run this test): %v", p, err)
	}
	return p
}

// Allocated returns the bytes the process allocated while fn ran
// (runtime.MemStats.TotalAlloc). Reliability tests use it to show a size
// check refused a hostile input before allocating for it.
func Allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
