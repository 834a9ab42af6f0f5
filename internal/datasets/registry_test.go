package datasets

import (
	"slices"
	"strings"
	"testing"
)

func TestRegistry(t *testing.T) {
	all := []string{"cifar10", "cifar100", "fashion-mnist", "folder", "imagenet", "imagenet32", "imagenet64", "mnist", "stl10", "webdataset"}
	if got := Names(); !slices.Equal(got, all) {
		t.Fatalf("Names() = %v, want %v", got, all)
	}
	inPlace := map[string]string{"imagenet": FormatImageNet, "imagenet32": FormatNPZ, "imagenet64": FormatNPZ, "webdataset": FormatWebDataset}
	for name, format := range inPlace {
		s, err := Lookup(name)
		if err != nil || s.Format != format || !ReadsInPlace(s.Format) || len(s.Files) != 0 {
			t.Errorf("%s: %+v, %v: want format %s, read in place, no download files", name, s, err, format)
		}
	}
	want := []string{"cifar10", "cifar100", "fashion-mnist", "folder", "mnist", "stl10"}
	formats := map[string]string{"cifar10": FormatCIFAR10, "cifar100": FormatCIFAR100, "mnist": FormatIDX,
		"fashion-mnist": FormatIDX, "stl10": FormatSTL10, "folder": FormatFolder}
	for _, name := range want {
		if ReadsInPlace(formats[name]) {
			t.Errorf("%s: read in place", name)
		}
		s, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if s.Name != name || s.Format != formats[name] {
			t.Errorf("%s: name %q format %q", name, s.Name, s.Format)
		}
		if name == "folder" {
			if len(s.Files) != 0 || s.H != 0 {
				t.Errorf("folder: %+v", s)
			}
			continue
		}
		if s.License == "" || s.Homepage == "" || s.Citation == "" || s.H == 0 || s.Splits == nil || len(s.Files) == 0 {
			t.Errorf("%s: incomplete spec %+v", name, s)
		}
		for _, f := range s.Files {
			if f.Name == "" || !strings.HasPrefix(f.URL, "http") || !strings.HasSuffix(f.URL, "/"+f.Name) || f.MD5 == "" || f.Size <= 0 {
				t.Errorf("%s: incomplete file %+v", name, f)
			}
			if f.SHA256 != "" && len(f.SHA256) != 64 || len(f.MD5) != 32 {
				t.Errorf("%s: bad checksum lengths %+v", name, f)
			}
		}
	}
	for alias, name := range map[string]string{"CIFAR-10": "cifar10", "Fashion_MNIST": "fashion-mnist", "stl-10": "stl10"} {
		if s, err := Lookup(alias); err != nil || s.Name != name {
			t.Errorf("Lookup(%q) = %q, %v", alias, s.Name, err)
		}
	}
	_, err := Lookup("imagenet-21k")
	mustContain(t, err, `"imagenet-21k"`, strings.Join(all, ", "))

	// Lookup returns copies.
	s, _ := Lookup("mnist")
	s.Files[0].URL = "changed"
	s.Splits["train"] = 1
	s.Classes[0] = "zero"
	s2, _ := Lookup("mnist")
	if s2.Files[0].URL == "changed" || s2.Splits["train"] != 60000 || s2.Classes[0] != "0" {
		t.Error("Lookup does not copy the spec")
	}
}
