package nbd

import (
	"errors"
	"os"
	"testing"
)

// KernelAvailable agrees with /sys/module/nbd: the driver is there exactly
// when the module is loaded or built in (both show under /sys/module).
func TestKernelAvailable(t *testing.T) {
	needGenl(t).close()
	err := KernelAvailable()
	_, statErr := os.Stat("/sys/module/nbd")
	switch {
	case statErr == nil && err != nil:
		t.Fatalf("/sys/module/nbd exists, but KernelAvailable: %v", err)
	case statErr != nil && !errors.Is(err, ErrNoKernelNBD):
		t.Fatalf("no /sys/module/nbd, but KernelAvailable: %v, want ErrNoKernelNBD", err)
	}
}
