package serve

import (
	"errors"
	"syscall"
)

// processAlive reports whether a process of this host is alive.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
