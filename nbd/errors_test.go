package nbd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"testing"
)

func syscallErrno(n int) error { return syscall.Errno(n) }

func TestErrnoOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Errno
	}{
		{nil, 0},
		{errors.New("boom"), EIO},
		{fmt.Errorf("qcow2: %w", ErrNoSpace), ENOSPC},
		{&os.PathError{Op: "write", Err: syscall.ENOSPC}, ENOSPC},
		{syscall.EDQUOT, ENOSPC},
		{syscall.EFBIG, ENOSPC},
		{syscall.EROFS, EPERM},
		{fs.ErrPermission, EPERM},
		{syscall.EINVAL, EINVAL},
		{syscall.EIO, EIO},
		{syscall.ENOMEM, ENOMEM},
		{errors.ErrUnsupported, ENOTSUP},
		{fmt.Errorf("x: %w", EOVERFLOW), EOVERFLOW},
	} {
		if got := errnoOf(tc.err); got != tc.want {
			t.Errorf("errnoOf(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestErrnoIs(t *testing.T) {
	if !errors.Is(fmt.Errorf("w: %w", ENOSPC), syscall.ENOSPC) || errors.Is(ENOSPC, syscall.EIO) {
		t.Fatal("Errno.Is")
	}
	if Errno(999).Error() != "NBD_E(999): invalid argument" {
		t.Fatal(Errno(999).Error())
	}
}
