//go:build !unix

package main

// cpuSeconds is not measured off unix.
func cpuSeconds() float64 { return -1 }
