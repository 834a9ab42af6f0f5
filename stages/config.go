package stages

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/igpt/igpt/internal/storage"
	"gopkg.in/yaml.v3"
)

// Config is an experiment: where its outputs live and each stage's
// settings. Only the per-stage sections enter stage keys; Root and Runner say
// where and how to run, not what is computed.
type Config struct {
	Root     string         `yaml:"root"`   // local folder or gs://bucket/prefix; default ./igpt-data
	Runner   string         `yaml:"runner"` // Beam runner: prism (default), direct, dataflow; --runner overrides
	Dataset  DatasetConfig  `yaml:"dataset"`
	Download DownloadConfig `yaml:"download"`

	// Path is the file the config was read from.
	Path string `yaml:"-"`
}

// DatasetConfig says which dataset to read and how to decode it.
type DatasetConfig struct {
	// Name is a registered dataset (cifar10, cifar100, mnist,
	// fashion-mnist, stl10) or "folder" for <split>/<class>/ image trees.
	Name string `yaml:"name" json:"name"`
	// Source overrides the official URL: a local file or directory,
	// file://, gs:// or a mirror https:// URL. Required for "folder".
	Source string `yaml:"source" json:"source,omitempty"`
	// SHA256 of the source file, checked when set (in addition to the
	// registry's checksum).
	SHA256 string `yaml:"sha256" json:"sha256,omitempty"`
	// ImageSize [h, w] that every image of a folder dataset must have;
	// empty accepts any size.
	ImageSize []int `yaml:"image_size" json:"image_size,omitempty"`
	// Channels of folder images: 3 (RGB, default) or 1 (grey).
	Channels int `yaml:"channels" json:"channels,omitempty"`
	// OnBadImage is the policy for a folder image that cannot be decoded or
	// has the wrong size: "fail" (default: the stage stops and names the
	// file) or "skip" (logged, counted in the manifest under "skipped").
	OnBadImage string `yaml:"on_bad_image" json:"on_bad_image,omitempty"`
	// CIFAR100Label picks CIFAR-100's "fine" (default) or "coarse" labels.
	CIFAR100Label string `yaml:"cifar100_label" json:"cifar100_label,omitempty"`
}

// DownloadConfig tunes the download stage's output.
type DownloadConfig struct {
	// Shards per split, e.g. {train: 8, test: 2}. Splits left out get
	// one shard per 32 MiB of pixels when the dataset's size is known,
	// else 4.
	Shards map[string]int `yaml:"shards" json:"shards,omitempty"`
}

// DefaultRoot is where outputs go when a config names no root.
const DefaultRoot = "./igpt-data"

// LoadConfig reads a YAML config. Unknown keys are errors, so a typo never
// silently falls back to a default.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.Path = path
	if cfg.Root != "" && !storage.IsGCS(cfg.Root) && !filepath.IsAbs(cfg.Root) {
		// Relative roots are relative to the working directory, as a
		// user typing paths expects; keep them as given.
		cfg.Root = filepath.Clean(cfg.Root)
	}
	return cfg, nil
}

// ParseConfig parses YAML config text and fills defaults.
func ParseConfig(data []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.Root == "" {
		cfg.Root = DefaultRoot
	}
	if cfg.Runner == "" {
		cfg.Runner = "prism"
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) validate() error {
	d := c.Dataset
	if d.Name == "" {
		return fmt.Errorf("dataset.name is required (cifar10, cifar100, mnist, fashion-mnist, stl10 or folder)")
	}
	if d.Name == "folder" && d.Source == "" {
		return fmt.Errorf("dataset.source is required for an image folder: a directory, .tar, .tar.gz or .zip of <split>/<class>/*.png|jpg")
	}
	if len(d.ImageSize) != 0 && (len(d.ImageSize) != 2 || d.ImageSize[0] <= 0 || d.ImageSize[1] <= 0) {
		return fmt.Errorf("dataset.image_size must be [height, width] with positive values, got %v", d.ImageSize)
	}
	if d.Channels != 0 && d.Channels != 1 && d.Channels != 3 {
		return fmt.Errorf("dataset.channels must be 1 or 3, got %d", d.Channels)
	}
	switch d.OnBadImage {
	case "", "fail", "skip":
	default:
		return fmt.Errorf("dataset.on_bad_image must be fail or skip, got %q", d.OnBadImage)
	}
	for split, n := range c.Download.Shards {
		if n <= 0 {
			return fmt.Errorf("download.shards.%s must be positive, got %d", split, n)
		}
	}
	return nil
}
