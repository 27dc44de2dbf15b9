// Package names holds the rules for the names netvol accepts from users and
// peers, defined once: volume (and snapshot) names and node names. Both
// leave no room for a path escape: no '/', no leading '.', bounded length.
package names

import (
	"fmt"
	"regexp"

	"github.com/netvol/netvol/errdefs"
)

var (
	volumeRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)
	// Node names are host names, possibly with a port-like suffix.
	nodeRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.:-]{0,252}$`)
)

// VolumeRule says what a volume name may be, for messages.
const VolumeRule = "a letter or digit, then up to 127 letters, digits, '_', '.' or '-'"

// NodeRule says what a node name may be, for messages.
const NodeRule = "a letter or digit, then up to 252 letters, digits, '_', '.', ':' or '-'"

// ValidVolume reports whether name is a valid volume name.
func ValidVolume(name string) bool { return volumeRe.MatchString(name) }

// CheckVolume refuses an invalid volume name with an error that wraps
// errdefs.ErrInvalid and states the rule.
func CheckVolume(name string) error {
	if !ValidVolume(name) {
		return fmt.Errorf("volume name %q: want %s: %w", name, VolumeRule, errdefs.ErrInvalid)
	}
	return nil
}

// CheckNode refuses an invalid node name, as CheckVolume does.
func CheckNode(name string) error {
	if !nodeRe.MatchString(name) {
		return fmt.Errorf("node name %q: want %s: %w", name, NodeRule, errdefs.ErrInvalid)
	}
	return nil
}
