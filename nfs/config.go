package nfs

import (
	"fmt"
	"net"
	"os"
	"path"
	"strings"
	"time"

	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/volume/backend"
)

// Mounter performs mounts; mount.System is the real one.
type Mounter interface {
	Mount(m mount.Mount) error
	// Unmount succeeds when target is not mounted.
	Unmount(target string) error
}

// Config is the backend's default server and how to talk to it.
type Config struct {
	// Server is the NFS server's host name or IP address (no port).
	Server string
	// Export is the absolute path the server exports, such as
	// /srv/nfs/vols; volumes are its subdirectories. The same path must
	// serve NFSv3 (directory management) and the mount's version.
	Export string
	// Version is the NFS version of the kernel mounts: "4.1" (default),
	// "4" or "3".
	Version string
	// Port and MountPort are the server's NFS and MOUNT ports. Zero asks the
	// server's portmapper, except that a v4 mount then uses the kernel's
	// default, 2049. They apply to Server only, not to a volume's override.
	Port, MountPort int
	// UID and GID are the AUTH_SYS credentials of directory management
	// (default 0 and 0; no supplementary groups are sent).
	UID, GID int
	// Machine is the AUTH_SYS machine name; default the host name.
	Machine string
	// Mounter performs the kernel mounts; default mount.System.
	Mounter Mounter
	// Now stamps archived volumes; default time.Now.
	Now func() time.Time
	// DialTimeout bounds each connection attempt; default 10 s.
	DialTimeout time.Duration
	// CallTimeout bounds each remote call when ctx has no earlier
	// deadline, so a hung server cannot hold a caller forever; default 30 s.
	CallTimeout time.Duration
}

// Versions accepted in Config.Version.
const (
	Version41 = "4.1"
	Version4  = "4"
	Version3  = "3"
)

const (
	defaultDialTimeout = 10 * time.Second
	defaultCallTimeout = 30 * time.Second
	maxID              = 1<<32 - 2 // 32-bit ids; 2^32-1 is chown's "no change"
	maxExportLen       = 1024      // MNTPATHLEN of RFC 1813
	maxMachineLen      = 255       // RFC 5531
)

// New checks cfg, fills in its defaults and returns the backend.
func New(cfg Config) (*Backend, error) {
	cfg.fill()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	def := target{server: cfg.Server, export: cfg.Export, port: cfg.Port, mountPort: cfg.MountPort}
	auth := authSys(cfg.Machine, uint32(cfg.UID), uint32(cfg.GID), uint32(cfg.Now().Unix()))
	// Root binds reserved source ports, as Linux's nfsd and mountd want.
	return &Backend{cfg: cfg, def: def, auth: auth, reserved: os.Geteuid() == 0}, nil
}

func (c *Config) fill() {
	c.Server = trimBrackets(c.Server)
	if c.Version == "" {
		c.Version = Version41
	}
	if c.Machine == "" {
		host, err := os.Hostname()
		if err != nil {
			host = "netvol"
		}
		c.Machine = host
	}
	if c.Mounter == nil {
		c.Mounter = mount.System{}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = defaultDialTimeout
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = defaultCallTimeout
	}
}

func (c *Config) validate() error {
	checks := []error{
		checkServer("Config.Server", c.Server),
		checkExport("Config.Export", c.Export),
		checkVersion(c.Version),
		checkPort("Config.Port", c.Port),
		checkPort("Config.MountPort", c.MountPort),
		checkID("Config.UID", c.UID),
		checkID("Config.GID", c.GID),
		checkPositive("Config.DialTimeout", c.DialTimeout),
		checkPositive("Config.CallTimeout", c.CallTimeout),
	}
	if len(c.Machine) > maxMachineLen {
		checks = append(checks, invalidf("Config.Machine: %d bytes, at most %d accepted", len(c.Machine), maxMachineLen))
	}
	for _, err := range checks {
		if err != nil {
			return fmt.Errorf("nfs: %w", err)
		}
	}
	return nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, backend.ErrInvalid)...)
}

func checkVersion(v string) error {
	switch v {
	case Version41, Version4, Version3:
		return nil
	}
	return invalidf("Config.Version %q: accepted are 4.1 (the default), 4 and 3", v)
}

func checkPort(field string, p int) error {
	if p < 0 || p > 65535 {
		return invalidf("%s %d: want 1 to 65535, or 0 to ask the portmapper", field, p)
	}
	return nil
}

func checkID(field string, id int) error {
	if id < 0 || id > maxID {
		return invalidf("%s %d: want 0 to %d", field, id, maxID)
	}
	return nil
}

func checkPositive(field string, d time.Duration) error {
	if d < 0 {
		return invalidf("%s %s: want a positive duration, or 0 for the default", field, d)
	}
	return nil
}

// checkServer accepts an IP address (IPv6 with or without brackets) or a
// DNS host name; anything else, a port or a comma included, is refused, as
// the name ends up in the mount source.
func checkServer(field, s string) error {
	if net.ParseIP(trimBrackets(s)) != nil || isHostName(s) {
		return nil
	}
	return invalidf("%s %q: want a host name or an IP address, without a port", field, s)
}

func isHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !isLabel(label) {
			return false
		}
	}
	return true
}

// isLabel is RFC 1123's rule: letters, digits and inner hyphens.
func isLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, r := range l {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// checkExport accepts an absolute, clean path without '..' or control
// characters, at most MNTPATHLEN long.
func checkExport(field, e string) error {
	bad := func(why string) error {
		return invalidf("%s %q: %s; want an absolute path such as /srv/nfs/vols", field, e, why)
	}
	switch {
	case e == "":
		return bad("empty")
	case !path.IsAbs(e):
		return bad("not absolute")
	case len(e) > maxExportLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxExportLen))
	case path.Clean(e) != e:
		return bad("not clean (path.Clean changes it)")
	case strings.ContainsFunc(e, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return bad("control characters")
	}
	for _, c := range strings.Split(e, "/") {
		if c == ".." {
			return bad("contains '..'")
		}
	}
	return nil
}
