package stages

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestShippedConfigsNeedNoSharedData: no shipped config reads a file a
// user does not have (../shared/data is this project's test data): a
// registered dataset comes from its official download or from --source,
// and the header says which.
func TestShippedConfigsNeedNoSharedData(t *testing.T) {
	files, _ := filepath.Glob("../configs/*.yaml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(f)
		if err != nil {
			t.Fatal(err)
		}
		if src := cfg.Dataset.Source; strings.Contains(src, "shared/") {
			t.Errorf("%s: dataset.source %s is not something a user has; leave it to the official download or --source", f, src)
		}
		if cfg.Dataset.Source == "" && cfg.Dataset.Name == "folder" {
			t.Errorf("%s: a folder dataset needs a source; name the registered dataset so the official download works", f)
		}
		if strings.Contains(string(b), "../shared") {
			t.Errorf("%s mentions ../shared, which users do not have", f)
		}
	}
}
