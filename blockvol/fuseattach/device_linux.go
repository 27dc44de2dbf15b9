package fuseattach

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/internal/mount"
)

// deviceUsers says what holds a block device: where it is mounted, or what
// stacks on it (device mapper); "" when nothing does.
func deviceUsers(device string) string {
	var st unix.Stat_t
	if err := unix.Stat(device, &st); err != nil {
		return ""
	}
	major, minor := int(unix.Major(st.Rdev)), int(unix.Minor(st.Rdev))
	var users []string
	if infos, err := mount.ReadInfo(); err == nil {
		for _, i := range infos {
			if i.Major == major && i.Minor == minor {
				users = append(users, "mounted at "+i.Target)
			}
		}
	}
	if idx, ok := loopIndex(device); ok {
		if holders, err := os.ReadDir(loopSysPath(idx, "holders")); err == nil {
			for _, h := range holders {
				users = append(users, "held by "+h.Name())
			}
		}
	}
	return strings.Join(users, ", ")
}
