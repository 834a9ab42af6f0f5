//go:build unix

package main

import "syscall"

// cpuSeconds is the process's user+system CPU time so far (all threads),
// or -1 where it cannot be read.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return -1
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
