package nfs

import (
	"fmt"
	"strings"

	"github.com/netvol/netvol/internal/names"
	"github.com/netvol/netvol/volume/backend"
)

// checkName re-checks a volume name before anything touches the server:
// the driver validates names, but a name is all that stands between a
// request and the export's parent directories. The rule excludes '/', "."
// and "..", and any name starting with '.', so the backend's own hidden
// entries (archiveDir) can never be taken for volumes.
func checkName(name string) error { return names.CheckVolume(name) }

// target is where a volume lives: a server, an export on it, and the ports
// to reach it there (0: ask the portmapper).
type target struct {
	server          string
	export          string
	port, mountPort int
}

// String names the export as server:/path, as in error messages.
func (t target) String() string { return hostPort(t.server) + ":" + t.export }

// source is the volume's directory as mount(8) would take it.
func (t target) source(name string) string {
	if t.export == "/" {
		return t.String() + name
	}
	return t.String() + "/" + name
}

// hostPort brackets an IPv6 address, as mount sources and dial addresses
// need.
func hostPort(host string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

// targetFor checks name and the volume's server and export overrides. An
// override of the server drops the configured ports, which belong to the
// default server.
func (b *Backend) targetFor(name string, o backend.Options) (target, error) {
	if err := checkName(name); err != nil {
		return target{}, err
	}
	t := b.def
	if o.Server != "" {
		if err := checkServer("server", o.Server); err != nil {
			return target{}, err
		}
		if s := trimBrackets(o.Server); s != t.server {
			t = target{server: s, export: t.export}
		}
	}
	if o.Export != "" {
		if err := checkExport("export", o.Export); err != nil {
			return target{}, err
		}
		t.export = o.Export
	}
	return t, nil
}

func trimBrackets(s string) string {
	if len(s) > 1 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	return s
}

// ParseExport splits an NFS export given as host:/path, the way mount(8)
// takes it; an IPv6 address is in brackets ([fd00::5]:/srv). The server
// comes back without brackets. Every caller (the plugin's and the operator
// commands' --nfs) parses with it.
func ParseExport(spec string) (server, export string, err error) {
	bad := func(why string) error {
		return fmt.Errorf("NFS export %q: %s: want host:/path, such as nas:/srv/nfs/vols or [fd00::5]:/srv/nfs/vols: %w",
			spec, why, backend.ErrInvalid)
	}
	host, path := "", ""
	if rest, ok := strings.CutPrefix(spec, "["); ok {
		h, p, ok := strings.Cut(rest, "]:")
		if !ok || h == "" || !strings.Contains(h, ":") {
			return "", "", bad("a bracketed IPv6 address must be followed by ]:")
		}
		host, path = h, p
	} else {
		h, p, ok := strings.Cut(spec, ":")
		if !ok {
			return "", "", bad("no ':' between host and path")
		}
		if h == "" {
			return "", "", bad("no host")
		}
		host, path = h, p
	}
	if !strings.HasPrefix(path, "/") {
		return "", "", bad("the path must be absolute")
	}
	if strings.ContainsAny(host, "/[] \t") {
		return "", "", bad("bad host")
	}
	return host, path, nil
}
