package stages

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/igpt/igpt/internal/datasets"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/pipelines"
)

func init() { Register(downloadStage{}) }

// downloadStage fetches a dataset (or reads a given source) and writes
// Image shards for every split.
type downloadStage struct{}

func (downloadStage) Name() string              { return "download" }
func (downloadStage) Version() int              { return 2 }
func (downloadStage) Upstream(*Config) []string { return nil }

func (downloadStage) Params(cfg *Config) any {
	return struct {
		Dataset  DatasetParams  `json:"dataset"`
		Download DownloadParams `json:"download"`
	}{cfg.Dataset, cfg.Download}
}

// UnitsName is the file, in the download stage's folder, that lists the
// source units for the workers; the job graph holds only its path.
const UnitsName = "_units.jsonl"

// ClassesName is the file, beside UnitsName, that holds the source's class
// names once, one JSON string a line (label order): the units reference it
// instead of each carrying the names.
const ClassesName = "_classes.jsonl"

// InputsName is the file, in a Beam stage's folder, that lists its input
// shards for the workers, for the same reason.
const InputsName = "_inputs.jsonl"

// DatasetParams says which dataset to read and how to decode it.
type DatasetParams struct {
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
	// Splits maps split names to their own source patterns (webdataset:
	// {train: "gs://b/train-{000000..000146}.tar", test: "gs://b/val-*.tar"}).
	Splits map[string]string `yaml:"splits" json:"splits,omitempty"`
}

// DownloadParams tunes the download stage's output.
type DownloadParams struct {
	// ShardMiB is the decoded pixels, in MiB, after which a source unit's
	// output shard is closed and the next begun (default 128). It bounds a
	// worker's memory and sets the parallelism of the stages that follow.
	ShardMiB int `yaml:"shard_mib" json:"shard_mib,omitempty"`
	// Resize, when > 0, scales every image so its short side is Resize and
	// crops the centre Resize×Resize square, in the workers (the paper's
	// preparation of ImageNet at 32, 48 and 64).
	Resize int `yaml:"resize" json:"resize,omitempty"`
	// Shards was the shard count per split before shards followed source
	// units; it is refused with a pointer to ShardMiB.
	Shards map[string]int `yaml:"shards" json:"-"`
}

// defaultShardMiB is download.shard_mib's default.
const defaultShardMiB = 128

// check validates the dataset section. The values' own rules live with
// the datasets package (datasets.Options.Validate); this adds the YAML
// shape of image_size and the source a folder needs.
func (d DatasetParams) check() error {
	if d.Name == "" {
		return fmt.Errorf("dataset.name is required (cifar10, cifar100, mnist, fashion-mnist, stl10 or folder)")
	}
	if d.Name == "folder" && d.Source == "" {
		return fmt.Errorf("dataset.source is required for an image folder: a directory, .tar, .tar.gz or .zip of <split>/<class>/*.png|jpg")
	}
	if len(d.ImageSize) != 0 && len(d.ImageSize) != 2 {
		return fmt.Errorf("dataset.image_size must be [height, width], got %v", d.ImageSize)
	}
	if err := datasetOptions(d).Validate(); err != nil {
		return errors.New(datasetKeys.Replace(strings.TrimPrefix(err.Error(), "datasets: bad options: ")))
	}
	return nil
}

// datasetKeys names datasets.Options' fields as the dataset section's keys.
var datasetKeys = strings.NewReplacer("ImageSize ", "dataset.image_size ", "Channels ", "dataset.channels ",
	"OnBad ", "dataset.on_bad_image ", "CIFAR100Label ", "dataset.cifar100_label ")

// fillDefaults stores the defaults a config may spell out (shard_mib
// 128) as they are stored when left out, so that both give one key.
func (d *DownloadParams) fillDefaults() {
	if d.ShardMiB == defaultShardMiB {
		d.ShardMiB = 0
	}
}

// fillDefaults stores the defaults a config may spell out as they are
// stored when left out (the zero value), so that both give one download
// key: channels 3 for a folder (encoded images decode to RGB), on_bad_image
// fail, cifar100_label fine. Elsewhere channels 0 keeps the source's own
// channels, so channels: 3 there is a choice, not a default.
func (d *DatasetParams) fillDefaults() {
	if d.Name == "folder" && d.Channels == 3 {
		d.Channels = 0
	}
	if d.OnBadImage == "fail" {
		d.OnBadImage = ""
	}
	if d.CIFAR100Label == "fine" {
		d.CIFAR100Label = ""
	}
}

// check validates the download section.
func (d DownloadParams) check() error {
	if len(d.Shards) > 0 {
		return fmt.Errorf("download.shards is no longer used: each source unit now writes its own shards; set download.shard_mib (MiB of pixels per shard, default %d) instead", defaultShardMiB)
	}
	return nil
}

func (d downloadStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	cfg := rc.Config
	spec, err := datasets.Lookup(cfg.Dataset.Name)
	if err != nil {
		return nil, err
	}
	src, layout, err := planSource(ctx, rc, &spec)
	if err != nil {
		return nil, err
	}
	tasks := unitTasks(layout.Units)
	unitsPath, classesPath := storage.Join(rc.Dir, UnitsName), storage.Join(rc.Dir, ClassesName)
	if err := pipelines.WriteUnits(ctx, unitsPath, classesPath, tasks, layout.Classes); err != nil {
		return nil, err
	}
	shardMiB := cmp.Or(cfg.Download.ShardMiB, defaultShardMiB)
	rc.Log.Info("download: reading source", "source", src, "units", len(tasks), "classes", len(layout.Classes), "shard_mib", shardMiB)
	registered, _ := datasets.Lookup(cfg.Dataset.Name)
	state := downloadState{Source: src, AsFolder: spec.Format != registered.Format,
		NumericClasses: layout.Classes == nil, Units: len(tasks), SplitUnits: map[string]int{}}
	for _, u := range layout.Units {
		state.SplitUnits[u.Split]++
	}
	return runJob(ctx, rc, d, state, func(s beam.Scope) (beam.PCollection, error) {
		return pipelines.Download(s, pipelines.DownloadConfig{Units: unitsPath, Classes: classesPath, ShardBytes: int64(shardMiB) << 20, Resize: cfg.Download.Resize, Dir: rc.Dir})
	})
}

// downloadState is what the download stage plans for its job's finish
// step: the source as read, whether it was read as an image folder under a
// registered dataset's name, whether its labels have no names, and its
// units per split (a count, never the list).
type downloadState struct {
	Source         string         `json:"source"`
	AsFolder       bool           `json:"as_folder,omitempty"`
	NumericClasses bool           `json:"numeric_classes,omitempty"`
	Units          int            `json:"units"`
	SplitUnits     map[string]int `json:"split_units"`
}

// Finish describes what the download job wrote, from its _stats.json and
// the class table beside the units.
func (downloadStage) Finish(ctx context.Context, rc *RunContext, state json.RawMessage) (*Output, error) {
	var ds downloadState
	if err := json.Unmarshal(state, &ds); err != nil {
		return nil, fmt.Errorf("download: finish step state: %w", err)
	}
	spec, err := datasets.Lookup(rc.Config.Dataset.Name)
	if err != nil {
		return nil, err
	}
	if ds.AsFolder {
		spec = spec.AsFolder()
	}
	st, err := pipelines.ReadDownloadStats(ctx, rc.Dir)
	if err != nil {
		return nil, err
	}
	if err := checkSplitsRead(ds.Source, ds.SplitUnits, st); err != nil {
		return nil, err
	}
	var classes []string
	if ds.NumericClasses {
		if classes, err = numericClasses(st); err != nil {
			return nil, err
		}
	} else {
		table, err := pipelines.ReadClassTable(ctx, storage.Join(rc.Dir, ClassesName))
		if err != nil {
			return nil, err
		}
		classes = append([]string{}, table.Names...)
	}
	files, meta := downloadMeta(spec, classes, st, ds.Source)
	meta["units"] = ds.Units
	if len(st.Skipped) > 0 {
		rc.logger().Warn("download: skipped bad images (on_bad_image: skip)", "count", len(st.Skipped), "first", st.Skipped[0])
	}
	return &Output{Files: files, Meta: meta}, nil
}

// planSource lists the source's units. A source read in place (imagenet,
// webdataset, the npz batches) is only listed here, never downloaded or
// read; the others are fetched and verified as before. A local source is
// sniffed first (sourceFits): an image folder, or an archive of one, given
// for a registered binary dataset is read as the folder format, and *spec
// changes to say so.
func planSource(ctx context.Context, rc *RunContext, spec *datasets.Spec) (string, datasets.Layout, error) {
	opt := datasetOptions(rc.Config.Dataset)
	if datasets.ReadsInPlace(spec.Format) {
		src := strings.TrimPrefix(rc.Config.Dataset.Source, "file://")
		if src == "" && len(rc.Config.Dataset.Splits) == 0 {
			return "", datasets.Layout{}, fmt.Errorf("dataset.source is required for %s: the folder, gs:// prefix or pattern holding its files (%s)", spec.Name, spec.Homepage)
		}
		if rc.Config.Dataset.SHA256 != "" {
			return "", datasets.Layout{}, fmt.Errorf("dataset.sha256 cannot be checked for %s: its files are read in place by the workers, never downloaded whole; remove it", spec.Name)
		}
		layout, err := datasets.InspectInPlace(ctx, *spec, src, rc.Config.Dataset.Splits, opt)
		return src, layout, err
	}
	if src := rc.Config.Dataset.Source; spec.Format == datasets.FormatFolder && datasets.IsFolderPrefix(src) {
		if rc.Config.Dataset.SHA256 != "" {
			return "", datasets.Layout{}, fmt.Errorf("dataset.sha256 cannot be checked for the image folder %s: its images are read in place by the workers; remove it", src)
		}
		layout, err := datasets.InspectFolderPrefix(ctx, src, opt)
		return src, layout, err
	}
	if src := rc.Config.Dataset.Source; spec.Format == datasets.FormatFolder && datasets.IsFolderArchive(src) && rc.Config.Dataset.SHA256 == "" {
		// Read in place by the workers: the launcher reads the zip's
		// directory or the tar's headers, and copies nothing. With
		// dataset.sha256 set the archive is fetched and verified whole, as
		// the digest asks, below. The source must name a file, as for
		// every fetched source.
		if _, err := sourceFileName(src); err != nil {
			return "", datasets.Layout{}, err
		}
		layout, err := datasets.InspectFolderArchive(ctx, src, opt)
		return src, layout, err
	}
	if err := sourceFits(ctx, rc, spec); err != nil {
		return "", datasets.Layout{}, err
	}
	src, err := fetchSource(ctx, rc, *spec)
	if err != nil {
		return "", datasets.Layout{}, err
	}
	layout, err := datasets.Inspect(ctx, *spec, src, opt)
	if err != nil {
		return "", datasets.Layout{}, err
	}
	layout.Units, err = remoteUnits(ctx, rc, layout.Units)
	return src, layout, err
}

// sourceFits sniffs a local dataset.source (not a URL or gs:// path) and
// decides how to read it: an image folder or an archive of one, given for
// a registered binary dataset, is read as the folder format (one info
// line says so) under the dataset's name; a source that holds another
// dataset's files is refused with the dataset.name that fits.
func sourceFits(ctx context.Context, rc *RunContext, spec *datasets.Spec) error {
	src := strings.TrimPrefix(rc.Config.Dataset.Source, "file://")
	if src == "" || storage.IsGCS(src) || strings.Contains(src, "://") {
		return nil
	}
	k, err := datasets.Sniff(ctx, src)
	if err != nil {
		return fmt.Errorf("dataset.source: %w", err)
	}
	switch {
	case k.Format == spec.Format || (k.Folder && spec.Format == datasets.FormatFolder):
		return nil
	case k.Folder && k.Format == "":
		rc.Log.Info("download: dataset.source is an image folder, not the "+spec.Format+" files of "+spec.Name+"; reading it as the folder format", "source", src)
		*spec = spec.AsFolder()
		return nil
	case k.Format != "":
		return fmt.Errorf("dataset.source %s is %s, which dataset.name %s does not read: set dataset.name: %s",
			src, k, spec.Name, strings.Join(k.DatasetNames(), " or "))
	}
	// Nothing recognised (a damaged archive, a folder missing its files):
	// the reader's checks say what is wrong.
	return nil
}

// unitTasks numbers each unit within its split, in the layout's order.
func unitTasks(units []datasets.Unit) []pipelines.UnitTask {
	next := map[string]int{}
	tasks := make([]pipelines.UnitTask, len(units))
	for i, u := range units {
		tasks[i] = pipelines.UnitTask{Index: next[u.Split], Unit: u}
		next[u.Split]++
	}
	return tasks
}

// checkSplitsRead is the download's check where the records are collected,
// for every source: each split the source listed must have given records.
// A WebDataset train pattern whose shards hold no samples used to finish
// "done" without a train split.
func checkSplitsRead(src string, units map[string]int, st *pipelines.DownloadStats) error {
	got := map[string]int64{}
	for _, sh := range st.Shards {
		got[sh.Split] += sh.Records
	}
	splits := make([]string, 0, len(units))
	for split := range units {
		splits = append(splits, split)
	}
	sort.Strings(splits)
	var empty []string
	for _, split := range splits {
		if got[split] == 0 {
			empty = append(empty, fmt.Sprintf("%s (%d units read)", split, units[split]))
		}
	}
	if len(empty) == 0 {
		return nil
	}
	hint := "check that its files hold images (.jpg/.jpeg/.png members; for WebDataset, samples named <key>.<ext>)"
	if len(st.Skipped) > 0 {
		hint = fmt.Sprintf("%d images were skipped (on_bad_image: skip), the first: %s", len(st.Skipped), st.Skipped[0])
	}
	return fmt.Errorf("download: source %s: split %s gave no records: %s", src, strings.Join(empty, ", split "), hint)
}

// numericClasses names the labels of a source without class names
// (WebDataset's .cls integers) by their number, 0 … the largest seen. The
// readers refuse a label of datasets.MaxClasses or more; checked again
// here, before the names are allocated, since the stats come from files.
func numericClasses(st *pipelines.DownloadStats) ([]string, error) {
	top := -1
	for _, sh := range st.Shards {
		for l := range sh.Labels {
			if l >= datasets.MaxClasses {
				return nil, fmt.Errorf("download: shard %s holds label %d, more than the %d classes allowed: is its .cls member a class index?", sh.Name, l, datasets.MaxClasses)
			}
			top = max(top, l)
		}
	}
	c := make([]string, top+1)
	for i := range c {
		c[i] = strconv.Itoa(i)
	}
	return c, nil
}

func datasetOptions(d DatasetParams) datasets.Options {
	opt := datasets.Options{Channels: d.Channels, OnBad: d.OnBadImage, CIFAR100Label: d.CIFAR100Label}
	if len(d.ImageSize) == 2 {
		opt.ImageSize = [2]int{d.ImageSize[0], d.ImageSize[1]}
	}
	return opt
}

// summarizeShards lists written shards as manifest files of kind and
// counts their records per split and per split and class name.
func summarizeShards(shards []pipelines.ShardStats, classes []string, kind string) ([]FileInfo, map[string]int64, map[string]map[string]int64) {
	var files []FileInfo
	records := map[string]int64{}
	perClass := map[string]map[string]int64{}
	for _, sh := range shards {
		files = append(files, FileInfo{Name: sh.Name, Split: sh.Split, Kind: kind, Records: sh.Records, Bytes: sh.Bytes})
		records[sh.Split] += sh.Records
		if perClass[sh.Split] == nil {
			perClass[sh.Split] = map[string]int64{}
		}
		for label, n := range sh.Labels {
			name := strconv.Itoa(label)
			if label >= 0 && label < len(classes) {
				name = classes[label]
			} else if label < 0 {
				name = "(unlabelled)"
			}
			perClass[sh.Split][name] += n
		}
	}
	return files, records, perClass
}

// DownloadOutput is what the download stage records beside its Image
// shards (manifest meta).
type DownloadOutput struct {
	Dataset string           `json:"dataset"`
	Classes []string         `json:"classes"`
	Records map[string]int64 `json:"records"`
	Skipped []string         `json:"skipped,omitempty"`
}

// ReadDownloadOutput reads a download stage's typed output.
func ReadDownloadOutput(m *Manifest) (DownloadOutput, error) {
	var out DownloadOutput
	return out, decodeMeta(m, "download", &out)
}

// downloadMeta summarises the written dataset for the manifest.
func downloadMeta(spec datasets.Spec, classes []string, st *pipelines.DownloadStats, src string) ([]FileInfo, map[string]any) {
	files, records, perClass := summarizeShards(st.Shards, classes, "Image")
	meta := map[string]any{
		"dataset": spec.Name, "format": spec.Format, "license": spec.License, "citation": spec.Citation,
		"source": src, "classes": classes, "records": records, "class_counts": perClass,
	}
	if len(st.Skipped) > 0 {
		meta["skipped"] = st.Skipped
	}
	return files, meta
}

// cacheDir is where fetched sources are kept between runs: under the root
// when it is local, else in the user's cache folder.
func cacheDir(cfg *Config, dataset string) string {
	if !storage.IsGCS(cfg.Root) {
		return filepath.Join(cfg.Root, "_cache", dataset)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "igpt", dataset)
}

// fetchSource makes the dataset's files available locally, verified, and
// returns what datasets.Inspect reads: a local file or directory.
func fetchSource(ctx context.Context, rc *RunContext, spec datasets.Spec) (string, error) {
	d := rc.Config.Dataset
	files := spec.Files
	if d.SHA256 != "" && isLocalDir(strings.TrimPrefix(d.Source, "file://")) {
		// A folder source: the digest covers the whole tree.
		src := strings.TrimPrefix(d.Source, "file://")
		rc.Log.Info("download: verifying dataset.sha256 over the source folder", "source", src)
		if err := datasets.VerifyTree(ctx, src, d.SHA256); err != nil {
			return "", fmt.Errorf("dataset.sha256: %w", err)
		}
		return src, nil
	}
	if d.SHA256 != "" {
		var err error
		if files, err = configChecksum(d, spec); err != nil {
			return "", err
		}
	}
	src := strings.TrimPrefix(d.Source, "file://")
	fopt := datasets.FetchOptions{Retries: 5, Progress: os.Stderr, Logger: rc.Log}
	cache := cacheDir(rc.Config, spec.Name)
	switch {
	case src == "" && len(files) == 0:
		return "", fmt.Errorf("dataset %s has no download URL: set dataset.source", spec.Name)
	case src == "":
		if dir := packagedSource(spec, rc.logger()); dir != "" { // a system package's copy
			rc.logger().Info("download: using the copy a system package installed", "dataset", spec.Name, "dir", dir)
			return dir, nil
		}
		for _, f := range files { // the registry's URL, then its mirrors
			if err := datasets.FetchFile(ctx, f, filepath.Join(cache, f.Name), fopt); err != nil {
				return "", offlineHint(spec, err)
			}
		}
		if len(files) == 1 {
			return filepath.Join(cache, files[0].Name), nil
		}
		return cache, nil
	case strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") || storage.IsGCS(src):
		p, err := fetchRemoteSource(ctx, src, files, cache, fopt)
		return p, offlineHint(spec, err)
	}
	st, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("dataset.source: %w", err)
	}
	if st.IsDir() {
		for _, f := range files {
			p := filepath.Join(src, f.Name)
			if _, err := os.Stat(p); err != nil {
				continue // Inspect names what is missing
			}
			if err := datasets.Verify(p, f); err != nil {
				return "", err
			}
		}
		return src, nil
	}
	if len(files) == 1 {
		if err := datasets.Verify(src, files[0]); err != nil {
			return "", err
		}
	}
	return src, nil
}

// configChecksum is the file list that dataset.sha256 describes: one file,
// the one the user points at (a mirror, a repackaging, a subset), so its
// checksum replaces the registry's.
func configChecksum(d DatasetParams, spec datasets.Spec) ([]datasets.File, error) {
	files := spec.Files
	if len(files) > 1 {
		return nil, fmt.Errorf("dataset.sha256 names one file, but %s has %d files; give a source folder or archive without it", spec.Name, len(files))
	}
	name := "source"
	if len(files) == 1 {
		name = files[0].Name
	}
	if d.Source != "" {
		var err error
		if name, err = sourceFileName(d.Source); err != nil {
			return nil, err
		}
	}
	return []datasets.File{{Name: name, SHA256: d.SHA256}}, nil
}

// fetchRemoteSource fetches an http(s):// or gs:// dataset.source into
// cache: one file, or for a multi-file dataset its files by name under
// src (a mirror). It returns the local file or folder.
func fetchRemoteSource(ctx context.Context, src string, files []datasets.File, cache string, fopt datasets.FetchOptions) (string, error) {
	if len(files) <= 1 {
		name, err := sourceFileName(src)
		if err != nil {
			return "", err
		}
		f := datasets.File{Name: name}
		if len(files) == 1 {
			f = files[0]
			f.Name = name
		}
		dst := filepath.Join(cache, f.Name)
		return dst, fetchRemote(ctx, src, f, dst, fopt)
	}
	for _, f := range files {
		if err := fetchRemote(ctx, strings.TrimSuffix(src, "/")+"/"+f.Name, f, filepath.Join(cache, f.Name), fopt); err != nil {
			return "", err
		}
	}
	return cache, nil
}

// offlineHint adds, to a download that could not reach its server, how to
// run without the network: --source with a local copy.
func offlineHint(spec datasets.Spec, err error) error {
	if err == nil || !errors.Is(err, datasets.ErrUnreachable) {
		return err
	}
	return fmt.Errorf("%w\nno network? run with --source PATH: a local copy of %s (its %s files), an image folder <split>/<class>/<image>, or a .tar/.tar.gz/.zip of one%s", err, spec.Name, spec.Format, packageHint(spec))
}

// isLocalDir reports whether p is a local folder.
func isLocalDir(p string) bool {
	if p == "" || storage.IsGCS(p) || strings.Contains(p, "://") {
		return false
	}
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// sourceFileName is the name under which a dataset.source file is kept in
// the cache: the last element of its path (of a URL's path, without query),
// refused when it is not a file name ("", ".", ".." — a URL ending in "/.."
// once wrote the tarball as the file <root>/_cache).
func sourceFileName(src string) (string, error) {
	p := src
	if u, err := url.Parse(src); err == nil && u.Scheme != "" && u.Scheme != "file" && !storage.IsGCS(src) {
		p = u.Path
	}
	name := path.Base(filepath.ToSlash(p))
	if p == "" || strings.HasSuffix(p, "/") || name == "." || name == ".." || name == "/" || strings.ContainsAny(name, "/\\\x00") {
		return "", fmt.Errorf("dataset.source %q does not end in a file name (it ends in %q): give the URL or path of the file itself, e.g. …/images.tar.gz", src, name)
	}
	return name, nil
}

// fetchRemote fetches an https:// or gs:// source file to a local path.
func fetchRemote(ctx context.Context, src string, f datasets.File, dst string, opt datasets.FetchOptions) error {
	if !storage.IsGCS(src) {
		return datasets.Fetch(ctx, src, f, dst, opt)
	}
	if datasets.Verify(dst, f) == nil {
		return nil
	}
	tmp := dst + ".part"
	if err := storage.Copy(ctx, src, tmp); err != nil {
		return err
	}
	if err := datasets.Verify(tmp, f); err != nil {
		os.Rename(tmp, dst+".bad")
		return err
	}
	return os.Rename(tmp, dst)
}

// remoteUnits rewrites the units' local paths to copies under the root's
// _cache when the root is on GCS, so that remote workers can read them.
func remoteUnits(ctx context.Context, rc *RunContext, units []datasets.Unit) ([]datasets.Unit, error) {
	if !storage.IsGCS(rc.Config.Root) {
		return units, nil
	}
	uploaded := map[string]string{}
	up := func(p string) (string, error) {
		if p == "" || storage.IsGCS(p) {
			return p, nil
		}
		if r, ok := uploaded[p]; ok {
			return r, nil
		}
		st, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		if st.IsDir() {
			return "", fmt.Errorf("download: source folder %s cannot be read by remote workers of a gs:// root; pack it as .tar/.tar.gz/.zip or upload it to gs://", p)
		}
		dst := storage.Join(rc.Config.Root, "_cache", rc.Config.Dataset.Name, filepath.Base(p))
		size, err := storage.Size(ctx, dst)
		if err != nil || size != st.Size() {
			rc.Log.Info("download: uploading source for remote workers", "file", p, "to", dst)
			if err := storage.Copy(ctx, p, dst); err != nil {
				return "", err
			}
		}
		uploaded[p] = dst
		return dst, nil
	}
	out := make([]datasets.Unit, len(units))
	for i, u := range units {
		var err error
		if u.Path, err = up(u.Path); err != nil {
			return nil, err
		}
		if u.LabelPath, err = up(u.LabelPath); err != nil {
			return nil, err
		}
		out[i] = u
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Split < out[j].Split })
	return out, nil
}
