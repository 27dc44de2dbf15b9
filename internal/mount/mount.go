// Package mount describes mounts as data and performs them with mount(2).
// Backends compute a Mount in pure code and hand it to a Mounter, so their
// logic is testable without root; System is the real Mounter.
package mount

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one mount(2) call: what, where, which file system, and the
// options as mount(8) would take them (flags such as "ro" and "noatime"
// are turned into mount flags, the rest is passed as data).
type Mount struct {
	Source  string
	Target  string
	Type    string
	Options []string
}

// flagOptions are the options mount(2) takes as flags, not data.
var flagOptions = map[string]uintptr{
	"ro": unix.MS_RDONLY, "rw": 0, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV,
	"noexec": unix.MS_NOEXEC, "sync": unix.MS_SYNCHRONOUS, "dirsync": unix.MS_DIRSYNC,
	"noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME, "relatime": unix.MS_RELATIME,
	"strictatime": unix.MS_STRICTATIME, "lazytime": unix.MS_LAZYTIME,
}

// FlagsAndData splits Options into mount(2) flags and the data string.
func (m Mount) FlagsAndData() (uintptr, string) {
	var flags uintptr
	var data []string
	for _, o := range m.Options {
		if f, ok := flagOptions[o]; ok {
			flags |= f
			continue
		}
		data = append(data, o)
	}
	return flags, strings.Join(data, ",")
}

// System performs mounts with the kernel.
type System struct{}

// Mount calls mount(2).
func (System) Mount(m Mount) error {
	flags, data := m.FlagsAndData()
	if err := unix.Mount(m.Source, m.Target, m.Type, flags, data); err != nil {
		return &os.PathError{Op: "mount " + m.Type + " " + m.Source, Path: m.Target, Err: err}
	}
	return nil
}

// Unmount calls umount2(2); a target that is not mounted is not an error.
func (System) Unmount(target string) error {
	err := unix.Unmount(target, 0)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		// EINVAL: not a mount point (any more).
		return nil
	}
	return &os.PathError{Op: "umount", Path: target, Err: err}
}

// Info is one line of /proc/self/mountinfo.
type Info struct {
	ID, Parent int
	Major      int
	Minor      int
	Root       string
	Target     string
	Options    string
	Type       string
	Source     string
	Super      string
}

// ReadInfo parses /proc/self/mountinfo.
func ReadInfo() ([]Info, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseInfo(f)
}

// ParseInfo parses the mountinfo format of proc(5).
func ParseInfo(r io.Reader) ([]Info, error) {
	var out []Info
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		i, err := parseInfoLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		out = append(out, i)
	}
	return out, sc.Err()
}

func parseInfoLine(line string) (Info, error) {
	left, right, ok := strings.Cut(line, " - ")
	l, r := strings.Fields(left), strings.Fields(right)
	if !ok || len(l) < 6 || len(r) < 3 {
		return Info{}, fmt.Errorf("malformed: %q", line)
	}
	var i Info
	var err1, err2, err3, err4 error
	i.ID, err1 = strconv.Atoi(l[0])
	i.Parent, err2 = strconv.Atoi(l[1])
	maj, min, _ := strings.Cut(l[2], ":")
	i.Major, err3 = strconv.Atoi(maj)
	i.Minor, err4 = strconv.Atoi(min)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Info{}, fmt.Errorf("malformed %q: %w", line, err)
	}
	i.Root, i.Target, i.Options = unescape(l[3]), unescape(l[4]), l[5]
	i.Type, i.Source, i.Super = r[0], unescape(r[1]), r[2]
	return i, nil
}

// unescape undoes the octal escapes (\040 for a space) of mountinfo.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Find returns the last (topmost) mount at target in infos.
func Find(infos []Info, target string) (Info, bool) {
	for i := len(infos) - 1; i >= 0; i-- {
		if infos[i].Target == target {
			return infos[i], true
		}
	}
	return Info{}, false
}

// Mounted reports whether target is a mount point now.
func Mounted(target string) (bool, error) {
	infos, err := ReadInfo()
	if err != nil {
		return false, err
	}
	_, ok := Find(infos, target)
	return ok, nil
}
