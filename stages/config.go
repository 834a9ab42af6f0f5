package stages

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"reflect"

	"github.com/igpt/igpt/internal/storage"
	"gopkg.in/yaml.v3"
)

// Config is an experiment: where its outputs live and each stage's
// settings. Only the per-stage sections enter stage keys; Root and Runner say
// where and how to run, not what is computed.
type Config struct {
	Root   string `yaml:"root"`   // local folder or gs://bucket/prefix; default ./igpt-data
	Runner string `yaml:"runner"` // Beam runner: prism (default), direct, dataflow; --runner overrides
	// Tokens is the token source that train, sample and probe read:
	// "palette" (default: quantize's palette tokens) or "vqvae" (the
	// vqvae-encode stage's code grids).
	Tokens   string         `yaml:"tokens"`
	Dataset  DatasetParams  `yaml:"dataset"`
	Download DownloadParams `yaml:"download"`
	Palette  PaletteParams  `yaml:"palette"`
	Quantize QuantizeParams `yaml:"quantize"`
	Train    TrainParams    `yaml:"train"`
	Probe    ProbeParams    `yaml:"probe"`
	Sample   SampleParams   `yaml:"sample"`
	VQVAE    VQVAEParams    `yaml:"vqvae"`
	// VQVAEEncode is the vqvae-encode stage's section.
	VQVAEEncode VQVAEEncodeParams `yaml:"vqvae_encode"`
	// Finetune is the finetune stage's section; a config that has one runs
	// the stage as part of igpt run.
	Finetune FinetuneParams `yaml:"finetune"`

	// Path is the file the config was read from.
	Path string `yaml:"-"`
	// hasFinetune records that the YAML has a finetune section.
	hasFinetune bool
}

// DefaultRoot is where outputs go when a config names no root.
const DefaultRoot = "./igpt-data"

// LoadConfig reads a YAML config. Unknown keys are errors, so a typo never
// silently falls back to a default.
func LoadConfig(path string) (*Config, error) {
	data, err := readConfigFile(path)
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

// ParseConfig parses YAML config text, fills defaults and checks every
// value, so a bad config fails before any stage runs (--dry_run included).
// Errors name keys as the YAML does (train.steps) and suggest the key meant
// when one is misspelt.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > MaxConfigBytes {
		return nil, fmt.Errorf("the config is %d bytes: at most %d (%d KiB); a config lists settings, not data: move long lists elsewhere", len(data), MaxConfigBytes, MaxConfigBytes>>10)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		return nil, err
	}
	var next yaml.Node
	if err := dec.Decode(&next); err != io.EOF {
		line := next.Line
		if err != nil {
			line = 0
		}
		return nil, fmt.Errorf("the config holds a second YAML document%s: igpt reads one document and would ignore the rest; remove the `---` and merge its keys into the first", lineText(line))
	}
	var cfg Config
	if len(doc.Content) > 0 {
		if err := checkKeys(doc.Content[0], reflect.TypeOf(cfg), ""); err != nil {
			return nil, err
		}
		if err := doc.Decode(&cfg); err != nil {
			return nil, err
		}
		cfg.hasFinetune = hasKey(doc.Content[0], "finetune")
	}
	if cfg.Root == "" {
		cfg.Root = DefaultRoot
	}
	if cfg.Runner == "" {
		cfg.Runner = "prism"
	}
	cfg.fillDefaults()
	if err := cfg.checkValues(); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// fillDefaults writes each section's default values into the config, so
// that a default written out and a default left out give the same stage
// keys. The defaults themselves live beside each stage's params type.
func (c *Config) fillDefaults() {
	c.Dataset.fillDefaults()
	c.Download.fillDefaults()
	c.Palette.fillDefaults()
	c.Quantize.fillDefaults()
	c.Train.fillDefaults()
	c.Probe.fillDefaults()
	c.Sample.fillDefaults()
	c.VQVAE.fillDefaults()
	c.VQVAEEncode.fillDefaults()
	if c.Tokens == "" {
		c.Tokens = TokensPalette
	}
	c.Finetune.fillDefaults(c.Tokens)
}

// The token sources of the tokens: key.
const (
	TokensPalette = "palette"
	TokensVQVAE   = "vqvae"
)

// TokensStage is the stage whose Tokens shards train, sample and probe
// read: quantize or vqvae-encode.
func (c *Config) TokensStage() string {
	if c.Tokens == TokensVQVAE {
		return "vqvae-encode"
	}
	return "quantize"
}

// DecoderStage is the stage whose output turns tokens back into pixels:
// the palette, or the trained VQ-VAE.
func (c *Config) DecoderStage() string {
	if c.Tokens == TokensVQVAE {
		return "vqvae-train"
	}
	return "palette"
}

// checkTokens checks the tokens: key and what it rules out.
func (c *Config) checkTokens() error {
	switch c.Tokens {
	case TokensPalette:
	case TokensVQVAE:
		if c.Train.HFlip > 0 {
			return fmt.Errorf("train.hflip = %v with tokens: vqvae: flipping a grid of VQ codes is not the code grid of the flipped image; leave train.hflip out", c.Train.HFlip)
		}
	default:
		return fmt.Errorf("tokens: %q, want palette or vqvae", c.Tokens)
	}
	return nil
}

// validate runs each section's check, in the order the stages run.
func (c *Config) validate() error {
	// Single values are checked against their ranges first (checkValues);
	// these checks are what a range cannot say: names, shapes, and one key
	// against another.
	for _, check := range []func() error{c.Dataset.check, c.Download.check, c.Quantize.check,
		c.Train.check, c.Probe.check, c.VQVAE.check, c.VQVAEEncode.check, c.checkTokens,
		func() error { return c.Finetune.check(c.Tokens) }, func() error { return CheckRunner("runner", c.Runner) }} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// MaxConfigBytes caps a config file: the shipped ones are under 4 KiB.
const MaxConfigBytes = 1 << 20

// readConfigFile reads at most MaxConfigBytes+1 bytes of path, so that a
// huge file (or a device) is refused by ParseConfig without being read
// whole.
func readConfigFile(path string) ([]byte, error) {
	// A regular file only (a FIFO or device never ends); its size is
	// judged by ParseConfig, from the first MaxConfigBytes+1 bytes.
	f, err := storage.OpenUserFile(context.Background(), path, 1<<40)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxConfigBytes+1))
}

// lineText is " (from line N)" when the line is known.
func lineText(line int) string {
	if line <= 0 {
		return ""
	}
	return fmt.Sprintf(" (from line %d)", line)
}

// hasKey reports whether the YAML mapping n has key k.
func hasKey(n *yaml.Node, k string) bool {
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == k {
			return true
		}
	}
	return false
}
