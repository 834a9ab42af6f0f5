// Package tools holds igpt's commands that read stage outputs without
// being stages: `igpt inspect` (a shard's header and records, or a stage
// folder's manifest), `igpt show tokens` (originals beside their
// palette-decoded tokens) and `igpt export-hf` / `import-hf` (Hugging Face
// ImageGPT weights). They reach outputs only through the stages package's
// typed readers (ReadManifest, Manifest.Upstream, ReadPalette,
// LoadTrained), never by a stage's manifest keys or folder layout.
package tools
