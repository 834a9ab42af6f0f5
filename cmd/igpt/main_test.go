package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/igpt/igpt/stages"
)

var update = flag.Bool("regen", false, "rewrite doc.go and the README's generated tables from the command table")

func TestTableIsComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range commands {
		if seen[c.name] {
			t.Errorf("command %q twice", c.name)
		}
		seen[c.name] = true
		if c.run == nil || c.summary == "" {
			t.Errorf("command %q: no run function or no summary", c.name)
		}
	}
	documented := map[string]bool{}
	for _, f := range tableFlags() {
		documented[f] = true
		if flag.Lookup(f) == nil {
			t.Errorf("the table documents --%s, which no package defines", f)
		}
	}
	for f := range igptFlags {
		if !documented[f] {
			t.Errorf("--%s is defined but no command's help shows it", f)
		}
	}
}

func TestCommandHelpShowsEveryFlagWithDefault(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		want []string
	}{
		{"sample", []string{"Usage: igpt sample RUN", "--n=16", "--out=\"\"", "--keep=0.5", "--temperature=1", "--log_level=info"}},
		{"run", []string{"Usage: igpt run CONFIG", "--until=\"\"", "--force=false", "--root=\"\"", "--source=\"\"", "--runner=", "--dry_run=false", "--async=false"}},
		{"stage", []string{"Usage: igpt stage NAME CONFIG", "--async=false", "dataflow: submit the next stage's job, print its id and the _MANIFEST.json it writes"}},
		{"inspect", []string{"--n=3"}},
		{"export-hf", []string{"--out=RUN/hf"}},
	} {
		c, ok := lookup(tc.cmd)
		if !ok {
			t.Fatalf("no command %q", tc.cmd)
		}
		var b bytes.Buffer
		printCommandHelp(&b, c)
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("igpt help %s: no %q in\n%s", tc.cmd, w, &b)
			}
		}
		for _, f := range c.flags {
			if !strings.Contains(b.String(), "--"+f.name+"=") {
				t.Errorf("igpt help %s: flag --%s missing", tc.cmd, f.name)
			}
		}
	}
	var b bytes.Buffer
	printUsage(&b)
	for _, c := range commands {
		if !strings.Contains(b.String(), "  "+c.usageLine()) {
			t.Errorf("igpt help: command %q missing", c.name)
		}
	}
}

func TestHelpRequested(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		cmd   string
		asked bool
	}{
		{[]string{"--help"}, "", true},
		{[]string{"-h"}, "", true},
		{[]string{"sample", "--help"}, "sample", true},
		{[]string{"run", "-h"}, "run", true},
		{[]string{"run", "cfg.yaml"}, "run", false},
		{[]string{"help", "sample"}, "help", false}, // the help command itself
	} {
		cmd, asked := helpRequested(tc.args)
		if cmd != tc.cmd || asked != tc.asked {
			t.Errorf("helpRequested(%q) = %q, %v; want %q, %v", tc.args, cmd, asked, tc.cmd, tc.asked)
		}
	}
}

func TestDispatchChecksArgsAndFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		flags   []string
		wantErr string
	}{
		{"unknown command", []string{"trian"}, nil, `unknown command "trian"`},
		{"argument count", []string{"run"}, nil, "run: want CONFIG"},
		{"flag of another command", []string{"inspect", "x"}, []string{"until", "probe"}, "inspect does not take --until"},
		{"help of unknown", []string{"help", "nope"}, nil, `help: unknown command "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			freshFlags(t, tc.flags...)
			err := dispatch(context.Background(), tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("dispatch(%q) = %v, want %q", tc.args, err, tc.wantErr)
			}
		})
	}
}

// freshFlags gives the test a command line with the same flags, igpt's at
// their defaults, then sets the name/value pairs kv, so that flag.Visit sees
// only those; the test's end restores the command line.
func freshFlags(t *testing.T, kv ...string) {
	t.Helper()
	saved := flag.CommandLine
	t.Cleanup(func() { flag.CommandLine = saved })
	c := flag.NewFlagSet(saved.Name(), flag.ContinueOnError)
	saved.VisitAll(func(f *flag.Flag) {
		if igptFlags[f.Name] {
			f.Value.Set(f.DefValue)
		}
		c.Var(f.Value, f.Name, f.Usage)
	})
	flag.CommandLine = c
	for i := 0; i+1 < len(kv); i += 2 {
		if err := flag.Set(kv[i], kv[i+1]); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCommandDefaults(t *testing.T) {
	for _, tc := range []struct {
		cmd   string
		given []string
		wantN int
	}{
		{"sample", nil, 16},
		{"sample", []string{"n", "4"}, 4},
		{"inspect", nil, 3},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			freshFlags(t, tc.given...)
			c, _ := lookup(tc.cmd)
			if err := c.checkFlags(); err != nil {
				t.Fatal(err)
			}
			if *numRecs != tc.wantN {
				t.Errorf("%s with %q: --n = %d, want %d", tc.cmd, tc.given, *numRecs, tc.wantN)
			}
		})
	}
}

func TestQuietBeam(t *testing.T) {
	beamPC := reflect.ValueOf(beam.NewPipeline).Pointer()
	ownPC := reflect.ValueOf(TestQuietBeam).Pointer()
	for _, tc := range []struct {
		name  string
		debug bool
		pc    uintptr
		level slog.Level
		shown bool
	}{
		{"beam info at info", false, beamPC, slog.LevelInfo, false},
		{"beam warning at info", false, beamPC, slog.LevelWarn, true},
		{"beam info at debug", true, beamPC, slog.LevelInfo, true},
		{"igpt info at info", false, ownPC, slog.LevelInfo, true},
	} {
		var b bytes.Buffer
		h := quietBeam{slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug}), tc.debug}
		r := slog.NewRecord(time.Time{}, tc.level, "msg", tc.pc)
		h.WithAttrs(nil).Handle(context.Background(), r)
		if got := b.Len() > 0; got != tc.shown {
			t.Errorf("%s: shown = %v, want %v", tc.name, got, tc.shown)
		}
	}
}

// TestRootElsewhere: a relative root that does not exist from here, while
// the same root beside the config holds a finished stage, stops the run
// with the --root to pass.
func TestRootElsewhere(t *testing.T) {
	repo := t.TempDir()
	cfgPath := filepath.Join(repo, "configs", "c.yaml")
	os.MkdirAll(filepath.Dir(cfgPath), 0o755)
	os.WriteFile(cfgPath, []byte("root: ./data\ndataset: {name: cifar10}\n"), 0o644)
	t.Chdir(t.TempDir())
	ctx := context.Background()
	if _, err := loadPlan(ctx, cfgPath); err != nil {
		t.Fatalf("nothing done anywhere: %v", err)
	}
	// Finish the download stage under <repo>/data.
	cfg, err := stages.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Root = filepath.Join(repo, "data")
	plan, err := stages.NewPlan(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := plan.Step("download")
	os.MkdirAll(st.Dir, 0o755)
	os.WriteFile(filepath.Join(st.Dir, stages.ManifestName), []byte(fmt.Sprintf(`{"stage":"download","version":1,"key":%q,"files":[]}`, st.Key)), 0o644)

	_, err = loadPlan(ctx, cfgPath)
	if err == nil || !strings.Contains(err.Error(), "--root="+filepath.Join(repo, "data")) {
		t.Errorf("root elsewhere: err = %v, want one naming --root=%s", err, filepath.Join(repo, "data"))
	}
	os.Mkdir("data", 0o755) // the root exists here: the user's choice
	if _, err := loadPlan(ctx, cfgPath); err != nil {
		t.Errorf("root exists here: %v", err)
	}
}

// packageDoc is doc.go as the command table makes it.
func packageDoc() string {
	var b strings.Builder
	b.WriteString("// Command igpt prepares image datasets, trains pixel transformers and\n// probes their representations, as a workflow of rerunnable stages.\n//\n")
	var tb bytes.Buffer
	tw := tabwriter.NewWriter(&tb, 0, 4, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "%s\t%s\n", c.usageLine(), c.summary)
	}
	tw.Flush()
	for _, l := range strings.Split(strings.TrimSuffix(tb.String(), "\n"), "\n") {
		b.WriteString("//\t" + strings.TrimRight(l, " ") + "\n")
	}
	b.WriteString("//\n// `igpt help COMMAND` (or `igpt COMMAND --help`) shows a command's arguments\n" +
		"// and every flag with its default. Flags go anywhere on the line; Beam's\n" +
		"// flags (--runner, --project, --region, --staging_location, --worker_binary)\n" +
		"// are accepted too.\n//\n// This comment is generated from the command table in commands.go:\n" +
		"// go test ./cmd/igpt -run TestPackageDoc -regen rewrites it.\npackage main\n")
	return b.String()
}

func TestPackageDoc(t *testing.T) {
	checkGenerated(t, "doc.go", func(string) string { return packageDoc() })
}

// checkGenerated compares a file with what gen makes of it, and with
// -regen writes gen's version.
func checkGenerated(t *testing.T, path string, gen func(old string) string) {
	t.Helper()
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := gen(string(old))
	if string(old) == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is not what the command table makes; run go test ./cmd/igpt -run %s -regen", path, t.Name())
}

// README tables between these markers are generated from the table.
const (
	readmePath    = "../../README.md"
	beginCommands = "<!-- commands: generated from cmd/igpt's command table (go test ./cmd/igpt -run TestREADME -regen) -->\n"
	endCommands   = "<!-- end of commands -->\n"
	beginFlags    = "<!-- flags: generated from cmd/igpt's command table (go test ./cmd/igpt -run TestREADME -regen) -->\n"
	endFlags      = "<!-- end of flags -->\n"
)

// readmeCommands is the README's command table.
func readmeCommands() string {
	var b strings.Builder
	b.WriteString("| command | what it does |\n|---|---|\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "| `%s` | %s |\n", c.usageLine(), c.summary)
	}
	return b.String()
}

// readmeFlags is the README's flag table: each flag, its default and the
// commands that take it, grouped by what it means for them.
func readmeFlags() string {
	groups := slices.Concat([]command{{name: "every command", flags: globalFlags}, {name: "run, stage", flags: beamFlags}}, commands)
	var b strings.Builder
	b.WriteString("| flag | default | commands: meaning |\n|---|---|---|\n")
	for _, name := range tableFlags() {
		var usages, defs []string
		users := map[string][]string{} // usage → commands
		for _, c := range groups {
			for _, f := range c.flags {
				if f.name != name || slices.Contains(beamFlags, f) && c.name != "run, stage" {
					continue
				}
				if users[f.usage] == nil {
					usages = append(usages, f.usage)
				}
				users[f.usage] = append(users[f.usage], c.name)
				def := f.defaultValue()
				if len(defs) > 0 && def != defs[0] {
					def = c.name + ": " + def
				}
				if !slices.Contains(defs, def) {
					defs = append(defs, def)
				}
			}
		}
		var meaning []string
		for _, u := range usages {
			meaning = append(meaning, strings.Join(users[u], ", ")+": "+u)
		}
		esc := strings.NewReplacer("|", "\\|")
		fmt.Fprintf(&b, "| `--%s` | %s | %s |\n", name, esc.Replace(strings.Join(defs, "; ")), esc.Replace(strings.Join(meaning, "; ")))
	}
	return b.String()
}

// replaceBetween replaces what lies between begin and end in s.
func replaceBetween(t *testing.T, s, begin, end, with string) string {
	t.Helper()
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("README: no %q … %q markers", begin, end)
	}
	return s[:i+len(begin)] + with + s[j:]
}

// TestREADME: the README's command and flag tables are the command
// table's, and every igpt command and flag the README shows exists.
func TestREADME(t *testing.T) {
	checkGenerated(t, readmePath, func(old string) string {
		s := replaceBetween(t, old, beginCommands, endCommands, readmeCommands())
		return replaceBetween(t, s, beginFlags, endFlags, readmeFlags())
	})
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range readmeMistakes(string(b)) {
		t.Error(bad)
	}
}

var (
	codeSpan   = regexp.MustCompile("`[^`\n]+`")
	fence      = regexp.MustCompile("(?s)```[a-z]*\n(.*?)```")
	igptCmd    = regexp.MustCompile(`(?:^|[\s/])igpt ([a-z][a-z-]*)`)
	flagInText = regexp.MustCompile(`(?:^|\s|\[)--([a-z][a-z_]*)`)
)

// readmeMistakes lists the igpt commands and flags in the README's code
// (inline spans and fenced blocks) that the table does not have: in a
// piece of code that runs igpt, every command and flag; in a span that is
// just a flag, that flag.
func readmeMistakes(readme string) []string {
	var pieces []string
	for _, m := range fence.FindAllStringSubmatch(readme, -1) {
		pieces = append(pieces, strings.Split(m[1], "\n")...)
	}
	pieces = append(pieces, codeSpan.FindAllString(fence.ReplaceAllString(readme, ""), -1)...)
	flags := tableFlags()
	var bad []string
	for _, p := range pieces {
		p = strings.Trim(p, "`")
		cmds := igptCmd.FindAllStringSubmatch(p, -1)
		for _, c := range cmds {
			if _, ok := lookup(c[1]); !ok {
				bad = append(bad, fmt.Sprintf("README shows `igpt %s`, which is not a command, in %q", c[1], p))
			}
		}
		if len(cmds) == 0 && !strings.HasPrefix(p, "--") {
			continue
		}
		for _, f := range flagInText.FindAllStringSubmatch(p, -1) {
			if !slices.Contains(flags, f[1]) {
				bad = append(bad, fmt.Sprintf("README shows --%s, which no command takes, in %q", f[1], p))
			}
		}
	}
	return bad
}

func TestREADMEMistakesFound(t *testing.T) {
	got := readmeMistakes("Run `igpt trian cfg.yaml --forse` or\n```sh\n./igpt run c.yaml --until probe --bogus\n```\nand `--nope`, not `python x.py --layers 4`.")
	for _, w := range []string{"igpt trian", "--forse", "--bogus", "--nope"} {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, w) }) {
			t.Errorf("no mistake reported for %s in %q", w, got)
		}
	}
	if len(got) != 4 {
		t.Errorf("%d mistakes, want 4: %q", len(got), got)
	}
}

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		in    string
		width int
		want  string
	}{
		{"a bb ccc", 4, "a bb\nccc"},
		{"a  bb", 80, "a bb"},
		{"longword x", 3, "longword\nx"},
		{"", 10, ""},
	} {
		if got := wrap(tc.in, tc.width); got != tc.want {
			t.Errorf("wrap(%q, %d) = %q, want %q", tc.in, tc.width, got, tc.want)
		}
	}
}

// TestReliability29_9_FlagRanges: a numeric flag that stands for a config
// key (igpt sample --n for sample.unconditional, --scale, --top_k, …) goes
// through that key's range before the command runs: --n 100000000 was
// sampled, and OOMed.
func TestReliability29_9_FlagRanges(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		flags   []string
		wantErr string
	}{
		{"sample --n", []string{"sample", "run"}, []string{"n", "100000000"}, "sample: --n is 100000000: want 0..4096 (the range of sample.unconditional"},
		{"sample --n max", []string{"sample", "run"}, []string{"n", "9223372036854775807"}, "sample: --n is 9223372036854775807: want 0..4096"},
		{"sample --scale", []string{"sample", "run"}, []string{"scale", "-1"}, "sample: --scale is -1: want 1..64 (the range of sample.scale"},
		{"sample --top_k", []string{"sample", "run"}, []string{"top_k", "-1"}, "sample: --top_k is -1: want 0..65536"},
		{"sample --temperature", []string{"sample", "run"}, []string{"temperature", "NaN"}, "sample: --temperature is NaN: want (0, 100]"},
		{"sample --keep", []string{"sample", "run"}, []string{"keep", "1"}, "sample: --keep is 1: want (0, 1)"},
		{"show --n", []string{"show", "tokens", "x"}, []string{"n", "100000000"}, "show: --n is 100000000: want 0..1024 (the range of sample.images"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			freshFlags(t, tc.flags...)
			err := dispatch(context.Background(), tc.args)
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("dispatch(%q) with %q = %v, want an error starting with %q", tc.args, tc.flags, err, tc.wantErr)
			}
		})
	}
	// The defaults are in range: sample gets as far as wanting --out.
	freshFlags(t)
	if err := dispatch(context.Background(), []string{"sample", "run"}); err == nil || !strings.Contains(err.Error(), "give --out") {
		t.Errorf("sample with the default flags: %v, want the --out error", err)
	}
}
