//go:build !amd64 || purego

package kernels

// archPaths returns no assembly paths off amd64 (or with -tags purego).
func archPaths() []*impl { return nil }

// cpuHasBF16 is false off amd64: no VDPBF16PS kernels.
const cpuHasBF16 = false
