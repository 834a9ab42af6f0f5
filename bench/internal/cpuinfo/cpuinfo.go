// Package cpuinfo names the processor a benchmark ran on, from
// /proc/cpuinfo, so that every figure can be quoted with its CPU model and
// family.
package cpuinfo

import (
	"fmt"
	"os"
	"strings"
)

// field returns the first value of key in /proc/cpuinfo, "" if none.
func field(key string) string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Model is the CPU's model name ("unknown CPU" when it cannot be read).
func Model() string {
	if m := field("model name"); m != "" {
		return m
	}
	return "unknown CPU"
}

// Describe is the model name with the CPU family, e.g. "AMD EPYC (CPU
// family 25)".
func Describe() string {
	return fmt.Sprintf("%s (CPU family %s)", Model(), field("cpu family"))
}
