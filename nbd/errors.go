package nbd

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"strconv"
	"strings"
	"syscall"
)

// Errno is an error value of a transmission reply. It implements error, so a
// Backend may return one to choose the reply exactly, and the Client returns
// one (wrapped) when the server fails a request. errors.Is matches an Errno
// against the syscall.Errno of the same meaning.
type Errno uint32

// Error values.
const (
	EPERM     Errno = 1   // NBD_EPERM
	EIO       Errno = 5   // NBD_EIO
	ENOMEM    Errno = 12  // NBD_ENOMEM
	EINVAL    Errno = 22  // NBD_EINVAL
	ENOSPC    Errno = 28  // NBD_ENOSPC
	EOVERFLOW Errno = 75  // NBD_EOVERFLOW
	ENOTSUP   Errno = 95  // NBD_ENOTSUP
	ESHUTDOWN Errno = 108 // NBD_ESHUTDOWN
)

// ErrNoSpace is the sentinel a Backend wraps when it runs out of space (the
// image reached its quota, the disk is full); it is answered NBD_ENOSPC.
// Wrapping syscall.ENOSPC, EDQUOT or EFBIG has the same effect.
var ErrNoSpace = errors.New("nbd: no space left for the export")

func (e Errno) String() string {
	switch e {
	case EPERM:
		return "NBD_EPERM"
	case EIO:
		return "NBD_EIO"
	case ENOMEM:
		return "NBD_ENOMEM"
	case EINVAL:
		return "NBD_EINVAL"
	case ENOSPC:
		return "NBD_ENOSPC"
	case EOVERFLOW:
		return "NBD_EOVERFLOW"
	case ENOTSUP:
		return "NBD_ENOTSUP"
	case ESHUTDOWN:
		return "NBD_ESHUTDOWN"
	}
	return "NBD_E(" + strconv.FormatUint(uint64(e), 10) + ")"
}

func (e Errno) Error() string {
	return e.String() + ": " + e.syscall().Error()
}

// Is lets errors.Is(err, syscall.EIO) match EIO.
func (e Errno) Is(target error) bool {
	t, ok := target.(syscall.Errno)
	return ok && t == e.syscall()
}

// syscall maps e to the Linux errno of the same meaning; unknown values read
// as EINVAL, as the spec asks clients to treat them.
func (e Errno) syscall() syscall.Errno {
	switch e {
	case EPERM:
		return syscall.EPERM
	case EIO:
		return syscall.EIO
	case ENOMEM:
		return syscall.ENOMEM
	case ENOSPC:
		return syscall.ENOSPC
	case EOVERFLOW:
		return syscall.EOVERFLOW
	case ENOTSUP:
		return syscall.EOPNOTSUPP
	case ESHUTDOWN:
		return syscall.ESHUTDOWN
	}
	return syscall.EINVAL
}

// errnoOf maps an error of a Backend to the error value of the reply. It is
// the one place where Go errors become NBD errors; nil maps to 0.
func errnoOf(err error) Errno {
	if err == nil {
		return 0
	}
	var e Errno
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, ErrNoSpace) {
		return ENOSPC
	}
	var sys syscall.Errno
	if errors.As(err, &sys) {
		return errnoOfSyscall(sys)
	}
	switch {
	case errors.Is(err, fs.ErrPermission):
		return EPERM
	case errors.Is(err, fs.ErrInvalid):
		return EINVAL
	case errors.Is(err, errors.ErrUnsupported):
		return ENOTSUP
	}
	return EIO
}

func errnoOfSyscall(e syscall.Errno) Errno {
	switch e {
	case syscall.EPERM, syscall.EACCES, syscall.EROFS:
		return EPERM
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
		return ENOSPC
	case syscall.EINVAL:
		return EINVAL
	case syscall.ENOMEM:
		return ENOMEM
	case syscall.EOVERFLOW:
		return EOVERFLOW
	case syscall.EOPNOTSUPP:
		return ENOTSUP
	case syscall.ESHUTDOWN:
		return ESHUTDOWN
	}
	return EIO
}

// redactName is an export name fit for logs and errors. The storage daemon's
// names are "<volume>.<token>" and the token is a credential, so only the
// part before the last '.' is kept, with a short hash of the whole name to
// tell names apart; a name without '.' keeps nothing but the hash.
func redactName(name string) string {
	sum := sha256.Sum256([]byte(name))
	tag := "<redacted " + hex.EncodeToString(sum[:4]) + ">"
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		return name[:i+1] + tag
	}
	return tag
}

// redactIn replaces the export name in s (an error message from elsewhere)
// by its redacted form.
func redactIn(s, name string) string {
	if name == "" {
		return s
	}
	return strings.ReplaceAll(s, name, redactName(name))
}
