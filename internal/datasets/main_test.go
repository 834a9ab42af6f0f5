package datasets

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// Keep the expected warnings (split sizes of small fixtures, …) out of
	// the test output unless asked for.
	if os.Getenv("IGPT_TEST_LOG") == "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	}
	os.Exit(m.Run())
}
