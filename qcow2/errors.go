package qcow2

import (
	"errors"
	"fmt"
)

var (
	// ErrReadOnly is returned by writes to an image opened read-only.
	ErrReadOnly = errors.New("qcow2: image is read-only")
	// ErrOutOfRange is returned for I/O past the end of the virtual disk.
	ErrOutOfRange = errors.New("qcow2: offset beyond the end of the image")
	// ErrClosed is returned by any call after Close.
	ErrClosed = errors.New("qcow2: image is closed")
	// ErrShrink is returned by Resize when asked to make the image smaller.
	ErrShrink = errors.New("qcow2: shrinking an image is not supported")
)

// FormatError reports an image that is not valid qcow2 or uses something this
// package does not support. Field names the header field or feature at fault.
type FormatError struct {
	Path   string
	Field  string
	Reason string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("qcow2: %s: %s: %s", e.Path, e.Field, e.Reason)
}

// UnsupportedError reports a feature this package refuses to open.
type UnsupportedError struct {
	Path    string
	Feature string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("qcow2: %s: unsupported feature: %s", e.Path, e.Feature)
}
