package stages

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// checkKeys walks a YAML node against the yaml tags of type t and refuses
// what decoding would refuse or silently drop, in the config's own terms:
// an unknown key (with the nearest known one: "train.stpes: unknown key;
// did you mean train.steps?"), a section that is not a mapping, and a
// value of the wrong type ("train.steps (line 4): want an integer, got
// "many""). No Go type name reaches the user.
func checkKeys(n *yaml.Node, t reflect.Type, path string) error {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if err := checkMapping(n, path); err != nil {
		return err
	}
	if t.Kind() != reflect.Struct {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return fmt.Errorf("%s (line %d): want %s, got %s", keyName(path), n.Line, kindName(t), nodeText(n))
		}
		return nil
	}
	fields := yamlFields(t)
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("%s (line %d): want a mapping of keys (%s), got %s", keyName(path), n.Line, strings.Join(sortedKeys(fields), ", "), nodeText(n))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := joinKey(path, k.Value)
		ft, ok := fields[k.Value]
		if !ok {
			names := sortedKeys(fields)
			for j := range names {
				names[j] = joinKey(path, names[j])
			}
			return fmt.Errorf("%s (line %d): unknown key%s", key, k.Line, didYouMean(key, names))
		}
		if err := checkKeys(v, ft, key); err != nil {
			return err
		}
	}
	return nil
}

// checkMapping refuses, in one linear pass, a mapping with more than
// maxMapKeys entries or a key written twice. yaml.v3 finds duplicates by
// comparing every pair of keys, so a config of 300,000 shard keys took
// minutes to load (igpt status included) before this check.
func checkMapping(n *yaml.Node, path string) error {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	if len(n.Content)/2 > maxMapKeys {
		return fmt.Errorf("%s (line %d): %d keys, at most %d: a config names a few splits or settings per section; remove the extra keys",
			keyName(path), n.Line, len(n.Content)/2, maxMapKeys)
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if first, dup := seen[k.Value]; dup {
			return fmt.Errorf("%s (line %d): written twice (first at line %d); keep one", joinKey(path, k.Value), k.Line, first)
		}
		seen[k.Value] = k.Line
	}
	return nil
}

// yamlFields maps a struct's YAML keys to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		if name, ok := yamlName(t.Field(i)); ok {
			out[name] = t.Field(i).Type
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func keyName(path string) string {
	if path == "" {
		return "the config"
	}
	return path
}

// kindName says in words what a value of type t is written as in YAML.
func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(kindName(t.Elem()), "an "), "a ") + "s"
	case reflect.Map:
		return "a mapping to " + kindName(t.Elem()) + " values"
	}
	return "a value of another form"
}

// nodeText shows a node briefly: a scalar quoted, a list or mapping by kind.
func nodeText(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	return fmt.Sprintf("%q", n.Value)
}

// didYouMean returns "; did you mean X?" for the known name nearest to
// got, when one is close enough to be a slip (an edit distance of at most
// 2, or a third of the name), else "".
func didYouMean(got string, known []string) string {
	best, bestD := "", -1
	for _, k := range known {
		if d := editDistance(strings.ToLower(got), strings.ToLower(k)); bestD < 0 || d < bestD {
			best, bestD = k, d
		}
	}
	if bestD < 0 || bestD > max(2, len(got)/3) {
		return ""
	}
	return fmt.Sprintf("; did you mean %s?", best)
}

// editDistance is the optimal-string-alignment distance: insertions,
// deletions, substitutions and swaps of neighbours each cost 1.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
