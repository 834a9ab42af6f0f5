package datasets

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Source formats, the values of Spec.Format and Unit.Format.
const (
	FormatCIFAR10  = "cifar10-bin"
	FormatCIFAR100 = "cifar100-bin"
	FormatIDX      = "idx"
	FormatSTL10    = "stl10-bin"
	FormatFolder   = "folder"
)

// File is one downloadable file of a dataset.
type File struct {
	Name   string // file name as stored locally, e.g. "cifar-10-binary.tar.gz"
	URL    string // official URL
	SHA256 string // hex, "" if unknown
	MD5    string // hex, "" if unknown
	Size   int64  // bytes, 0 if unknown

	// Mirrors are other URLs serving the same bytes, to try when URL fails.
	Mirrors []string `json:",omitempty"`
	// AltSHA256 lists sha256 digests of known repackagings whose bytes differ
	// from the official file but whose content is identical (for example
	// Debian's re-gzipped Fashion-MNIST). A file matching one of them
	// verifies even though its size and official checksums differ.
	AltSHA256 []string `json:",omitempty"`
}

// Spec describes a registered dataset.
type Spec struct {
	Name     string // "cifar10", "cifar100", "mnist", "fashion-mnist", "stl10", "folder"
	Format   string // one of the Format constants
	Files    []File // empty for "folder"
	License  string
	Homepage string
	Citation string
	H, W, C  int            // 0 when any size (folder)
	Splits   map[string]int // expected record count per split; nil if unknown

	// Classes are the class names (label = index) when they are fixed by the
	// dataset and not read from its files; nil otherwise. Inspect uses them
	// for formats without a class-name file (idx) and as a fallback.
	Classes []string `json:",omitempty"`
}

var cifar10Classes = []string{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}

var fashionClasses = []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}

var stl10Classes = []string{"airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"}

var digitClasses = []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}

func mnistFile(name, sha, md5 string, size int64) File {
	return File{
		Name:   name,
		URL:    "https://yann.lecun.com/exdb/mnist/" + name,
		SHA256: sha,
		MD5:    md5,
		Size:   size,
		Mirrors: []string{
			"https://ossci-datasets.s3.amazonaws.com/mnist/" + name,
			"https://storage.googleapis.com/cvdf-datasets/mnist/" + name,
		},
	}
}

// Fashion-MNIST: official md5s and sizes from github.com/zalandoresearch/fashion-mnist.
// The official sha256s are not published; AltSHA256 holds those of Debian's
// dataset-fashion-mnist files (same payload, gzip header without the file name).
func fashionFile(name, md5 string, size int64, debianSHA string) File {
	return File{
		Name:      name,
		URL:       "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" + name,
		MD5:       md5,
		Size:      size,
		Mirrors:   []string{"https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/" + name},
		AltSHA256: []string{debianSHA},
	}
}

var registry = map[string]Spec{
	"cifar10": cifarSpec("cifar10", FormatCIFAR10, File{
		Name:   "cifar-10-binary.tar.gz",
		URL:    "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
		SHA256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
		MD5:    "c32a1d4ab5d03f1284b67883e8d87530",
		Size:   170052171,
	}, cifar10Classes),
	"cifar100": cifarSpec("cifar100", FormatCIFAR100, File{
		Name:   "cifar-100-binary.tar.gz",
		URL:    "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
		SHA256: "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
		MD5:    "03b5dce01913d631647c71ecec9e9cb8",
		Size:   168513733,
	}, nil),
	"mnist": {
		Name:   "mnist",
		Format: FormatIDX,
		Files: []File{
			mnistFile("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
			mnistFile("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", "d53e105ee54ea40749a09fcbcd1e9432", 28881),
			mnistFile("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", "9fb629c4189551a2d022fa330f9573f3", 1648877),
			mnistFile("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", "ec29112dd5afa0611ce80d1b7f02629c", 4542),
		},
		License:  "CC BY-SA 3.0 (as stated by Yann LeCun and Corinna Cortes)",
		Homepage: "http://yann.lecun.com/exdb/mnist/",
		Citation: "Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to document recognition. Proceedings of the IEEE 86(11), 1998.",
		H:        28, W: 28, C: 1,
		Splits:  map[string]int{"train": 60000, "test": 10000},
		Classes: digitClasses,
	},
	"fashion-mnist": {
		Name:   "fashion-mnist",
		Format: FormatIDX,
		Files: []File{
			fashionFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880, "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
			fashionFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29515, "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
			fashionFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4422102, "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
			fashionFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5148, "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
		},
		License:  "MIT",
		Homepage: "https://github.com/zalandoresearch/fashion-mnist",
		Citation: "Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms. arXiv:1708.07747, 2017.",
		H:        28, W: 28, C: 1,
		Splits:  map[string]int{"train": 60000, "test": 10000},
		Classes: fashionClasses,
	},
	"stl10": {
		Name:   "stl10",
		Format: FormatSTL10,
		Files: []File{{
			Name: "stl10_binary.tar.gz",
			URL:  "https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
			MD5:  "91f7769df0f17e558f3565bffb0c7dfb",
			Size: 2640397119,
		}},
		License:  "no licence stated (images from ImageNet; see homepage)",
		Homepage: "https://cs.stanford.edu/~acoates/stl10/",
		Citation: "Adam Coates, Honglak Lee, Andrew Y. Ng. An Analysis of Single Layer Networks in Unsupervised Feature Learning. AISTATS, 2011.",
		H:        96, W: 96, C: 3,
		Splits:  map[string]int{"train": 5000, "test": 8000, "unlabeled": 100000},
		Classes: stl10Classes,
	},
	"folder": {
		Name:   "folder",
		Format: FormatFolder,
	},
	"imagenet": {
		Name:     "imagenet",
		Format:   FormatImageNet,
		License:  "ImageNet terms of access: non-commercial research and education only (see homepage); download it yourself after accepting them",
		Homepage: "https://image-net.org/download.php",
		Citation: "Olga Russakovsky et al. ImageNet Large Scale Visual Recognition Challenge. IJCV 115(3), 2015.",
		Splits:   map[string]int{"train": 1281167, "test": 50000},
	},
	"imagenet32": downsampledImageNet("imagenet32", 32),
	"imagenet64": downsampledImageNet("imagenet64", 64),
	"webdataset": {
		Name:   "webdataset",
		Format: FormatWebDataset,
	},
}

// cifarSpec is the registry entry of CIFAR-10 or CIFAR-100 (one archive,
// the same report, 32×32 RGB, 50000 + 10000 images).
func cifarSpec(name, format string, f File, classes []string) Spec {
	return Spec{
		Name:     name,
		Format:   format,
		Files:    []File{f},
		License:  "no licence stated; the authors ask users to cite the technical report (see homepage)",
		Homepage: "https://www.cs.toronto.edu/~kriz/cifar.html",
		Citation: "Alex Krizhevsky. Learning Multiple Layers of Features from Tiny Images. Technical report, University of Toronto, 2009.",
		H:        32, W: 32, C: 3,
		Splits:  map[string]int{"train": 50000, "test": 10000},
		Classes: classes,
	}
}

// downsampledImageNet is the registry entry of Chrabaszcz et al.'s
// downsampled ImageNet at side×side (the paper's 32×32 and 64×64 inputs).
func downsampledImageNet(name string, side int) Spec {
	return Spec{
		Name:     name,
		Format:   FormatNPZ,
		License:  "ImageNet terms of access: non-commercial research and education only (see homepage)",
		Homepage: "https://image-net.org/download-images.php",
		Citation: "Patryk Chrabaszcz, Ilya Loshchilov, Frank Hutter. A Downsampled Variant of ImageNet as an Alternative to the CIFAR datasets. arXiv:1707.08819, 2017.",
		H:        side, W: side, C: 3,
		Splits: map[string]int{"train": 1281167, "test": 50000},
	}
}

var aliases = map[string]string{
	"cifar-10":      "cifar10",
	"cifar-100":     "cifar100",
	"fashion_mnist": "fashion-mnist",
	"fashionmnist":  "fashion-mnist",
	"stl-10":        "stl10",
	"imagefolder":   "folder",
	"ilsvrc2012":    "imagenet",
	"wds":           "webdataset",
}

// Lookup returns the registered dataset called name (case-insensitive; a few
// common spellings such as "cifar-10" are accepted). The Spec is a copy.
func Lookup(name string) (Spec, error) {
	key := strings.ToLower(strings.TrimSpace(name))
	if a, ok := aliases[key]; ok {
		key = a
	}
	s, ok := registry[key]
	if !ok {
		return Spec{}, fmt.Errorf("datasets: unknown dataset %q; known datasets: %s", name, strings.Join(Names(), ", "))
	}
	return cloneSpec(s), nil
}

// Names lists the registered datasets, sorted.
func Names() []string {
	return slices.Sorted(maps.Keys(registry))
}

func cloneSpec(s Spec) Spec {
	s.Files = slices.Clone(s.Files)
	for i := range s.Files {
		s.Files[i].Mirrors = slices.Clone(s.Files[i].Mirrors)
		s.Files[i].AltSHA256 = slices.Clone(s.Files[i].AltSHA256)
	}
	s.Splits = maps.Clone(s.Splits)
	s.Classes = slices.Clone(s.Classes)
	return s
}

// AsFolder returns s to be read from an image folder (or an archive of one)
// instead of its own files: the folder format, no files to fetch or
// verify, any image size; its name, licence, citation, expected split
// sizes and class names stay.
func (s Spec) AsFolder() Spec {
	f := cloneSpec(s)
	f.Format, f.Files = FormatFolder, nil
	f.H, f.W, f.C = 0, 0, 0
	return f
}
