package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The README's quick start: the commands a newcomer types, in order.
const (
	readmeBuild = "go build -o igpt ./cmd/igpt"
	readmeMain  = "./igpt run configs/quickstart-offline.yaml"
	readmeTest  = "go test -count=1 -timeout 25m ./..."
	claimsPath  = "../../docs/claims.md"
)

// TestREADMEQuickStart: the README's build, main and test commands come
// before its first image, and the main command's expected output (the
// summary block) starts within the first screen (40 lines), so a newcomer
// reads how to run it before any lab log.
func TestREADMEQuickStart(t *testing.T) {
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	if msg := quickStartProblem(string(b)); msg != "" {
		t.Error(msg)
	}
	if _, err := os.Stat("../../configs/quickstart-offline.yaml"); err != nil {
		t.Errorf("the quick start's config: %v", err)
	}
}

// quickStartProblem says what is wrong with a README's quick start, "" if
// nothing.
func quickStartProblem(readme string) string {
	img := strings.Index(readme, "![")
	if img < 0 {
		img = len(readme)
	}
	for _, cmd := range []string{readmeBuild, readmeMain, readmeTest} {
		i := strings.Index(readme, "\n"+cmd)
		if i < 0 || i > img {
			return fmt.Sprintf("README: %q is not in a command block before the first image", cmd)
		}
	}
	lines := strings.Split(readme, "\n")
	for n, l := range lines {
		if strings.HasPrefix(l, "```") && n+1 < len(lines) && strings.HasPrefix(lines[n+1], "STAGE ") {
			if n > 40 {
				return fmt.Sprintf("README: the main command's expected output starts at line %d; the quick start must fit in 40 lines before it", n+1)
			}
			return ""
		}
	}
	return "README: no expected output (a block starting with the summary's STAGE header) after the main command"
}

func TestQuickStartProblemFound(t *testing.T) {
	good := "# igpt\n```sh\ngo build -o igpt ./cmd/igpt\n./igpt run configs/quickstart-offline.yaml\n```\n```\nSTAGE  KEY\n```\n```sh\ngo test -count=1 -timeout 25m ./...\n```\n![x](y.png)\n"
	if msg := quickStartProblem(good); msg != "" {
		t.Errorf("a good quick start: %s", msg)
	}
	late := strings.Replace(good, "# igpt\n", "# igpt\n"+strings.Repeat("lab log\n", 40), 1)
	if msg := quickStartProblem(late); !strings.Contains(msg, "fit in 40 lines") {
		t.Errorf("a quick start pushed down 40 lines: %q", msg)
	}
	imageFirst := strings.Replace(good, "# igpt\n", "# igpt\n![loss](l.png)\n", 1)
	if msg := quickStartProblem(imageFirst); !strings.Contains(msg, "before the first image") {
		t.Errorf("an image before the commands: %q", msg)
	}
}

var (
	// A headline figure: a percentage, "N min" or "N×" (not a size such
	// as 16×16 or 4 × 256).
	figureRe    = regexp.MustCompile(`[+−-]?\d+(?:\.\d+)?(?:%| min\b|×(?:[^\d]|$))`)
	numberRe    = regexp.MustCompile(`\d+(?:\.\d+)?`)
	marginRe    = regexp.MustCompile(`[+−-]?\d+(?:\.\d+)?`)
	claimRowRe  = regexp.MustCompile(`(?m)^\| *([^|]+?) *\|([^|]*)\|([^|]*)\|`)
	fencedBlock = regexp.MustCompile("(?s)```.*?```")
)

// readmeFigures returns the headline figures of the README, the part before
// "## User guide" outside code blocks: every percentage, "N min" and "N×",
// and in the results table the minutes column ("N min") and the margin
// column ("+N points"). Each comes with the line it is on.
func readmeFigures(readme string) map[string]string {
	head, _, _ := strings.Cut(readme, "\n## User guide")
	head = fencedBlock.ReplaceAllString(head, "")
	figs := map[string]string{}
	inResults := false
	for _, l := range strings.Split(head, "\n") {
		if strings.HasPrefix(l, "## ") {
			inResults = l == "## Results"
		}
		for _, f := range figureRe.FindAllString(l, -1) {
			figs[normFigure(f)] = l
		}
		cells := strings.Split(l, "|")
		if !inResults || len(cells) < 8 || strings.HasPrefix(strings.TrimSpace(cells[1]), "run") || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") {
			continue
		}
		for _, n := range numberRe.FindAllString(cells[3], -1) {
			figs[n+" min"] = l
		}
		for _, n := range marginRe.FindAllString(cells[6], -1) {
			if n = strings.ReplaceAll(n, "−", "-"); n[0] != '-' && n[0] != '+' {
				n = "+" + n
			}
			figs[n+" points"] = l
		}
	}
	return figs
}

// normFigure gives a figure matched by figureRe its canonical form: "41.6%",
// "6.4 min", "3.5×".
func normFigure(f string) string {
	f = strings.ReplaceAll(f, "−", "-")
	if i := strings.Index(f, "×"); i >= 0 {
		return f[:i] + "×"
	}
	return f
}

// claimedFigures are the figures docs/claims.md lists with a source: the
// first cell of each table row whose third cell is not empty.
func claimedFigures(claims string) map[string]bool {
	out := map[string]bool{}
	for _, m := range claimRowRe.FindAllStringSubmatch(claims, -1) {
		if strings.TrimSpace(m[3]) == "" || strings.HasPrefix(m[1], "---") {
			continue
		}
		for _, f := range strings.Split(m[1], ",") {
			out[strings.Trim(strings.TrimSpace(f), "`")] = true
		}
	}
	return out
}

// TestREADMEClaims: every headline figure of the README has a row in
// docs/claims.md naming the command or report that produced it.
func TestREADMEClaims(t *testing.T) {
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := os.ReadFile(claimsPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, miss := range unclaimed(string(readme), string(claims)) {
		t.Error(miss)
	}
}

func unclaimed(readme, claims string) []string {
	have := claimedFigures(claims)
	var out []string
	for f, line := range readmeFigures(readme) {
		if !have[f] {
			out = append(out, fmt.Sprintf("README figure %q (in %q) has no row in docs/claims.md: add one with the command or report that produced it", f, strings.TrimSpace(line)))
		}
	}
	return out
}

func TestUnclaimedFound(t *testing.T) {
	readme := "# igpt\nIt took 6.4 min and probes 41.6%, 3.5× faster, on 16×16 tokens.\n\n## Results\n\n| run | config | min | probe | raw pixels | margin | page |\n|---|---|---|---|---|---|---|\n| a | `a.yaml` | 47 | 39.6% | 36.1% | +3.5 | [a](a.md) |\n| b | `b.yaml` | 5 | 1.0% | 2.0% | −1.0 | [b](b.md) |\n\n## User guide\n80% here is not a headline.\n"
	claims := "| figure | README | source |\n|---|---|---|\n| 6.4 min | x | run log |\n| 41.6%, 39.6% | x | report |\n| 36.1% | x | |\n"
	got := strings.Join(unclaimed(readme, claims), "\n")
	for _, want := range []string{`"3.5×"`, `"47 min"`, `"36.1%"`, `"+3.5 points"`, `"-1.0 points"`} {
		if !strings.Contains(got, want) {
			t.Errorf("no complaint about %s:\n%s", want, got)
		}
	}
	for _, not := range []string{`"6.4 min"`, `"41.6%"`, `"39.6%"`, `"16×"`, `"80%"`} {
		if strings.Contains(got, not) {
			t.Errorf("a complaint about %s:\n%s", not, got)
		}
	}
}
