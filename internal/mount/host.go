package mount

import (
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Host answers questions about this host's mounts from
// /proc/self/mountinfo and statfs(2).
type Host struct{}

// Mounted reports whether path is a mount point.
func (Host) Mounted(path string) (bool, error) { return Mounted(filepath.Clean(path)) }

// MountsUnder lists the mount points strictly below root.
func (Host) MountsUnder(root string) ([]string, error) {
	infos, err := ReadInfo()
	if err != nil {
		return nil, err
	}
	prefix := filepath.Clean(root) + "/"
	var out []string
	for _, i := range infos {
		if strings.HasPrefix(i.Target, prefix) {
			out = append(out, i.Target)
		}
	}
	return out, nil
}

// Usage reports the bytes in use and the size of the file system at path.
func (Host) Usage(path string) (used, size int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	bs := int64(st.Bsize)
	return int64(st.Blocks-st.Bfree) * bs, int64(st.Blocks) * bs, nil
}
