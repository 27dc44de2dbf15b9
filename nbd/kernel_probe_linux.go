package nbd

import (
	"errors"
	"fmt"
	"syscall"
)

// KernelAvailable reports whether the kernel has an NBD driver, without
// changing anything and without privileges: it resolves the "nbd" generic
// netlink family. It returns nil when the family resolves, ErrNoKernelNBD
// when the kernel does not know it (driver neither built in nor loaded),
// and another error when generic netlink itself cannot be used.
func KernelAvailable() error {
	s, err := openGenl()
	if err != nil {
		return fmt.Errorf("nbd: generic netlink: %w", err)
	}
	defer s.close()
	_, err = s.familyID(nbdFamilyName)
	if errors.Is(err, syscall.ENOENT) {
		return ErrNoKernelNBD
	}
	if err != nil {
		return fmt.Errorf("nbd: resolving the generic netlink family %q: %w", nbdFamilyName, err)
	}
	return nil
}
