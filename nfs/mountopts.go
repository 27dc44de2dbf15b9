package nfs

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/volume/backend"
)

// allowedOption is one entry of the mount option allowlist: a flag, or a
// key=value whose value check accepts it.
type allowedOption struct {
	name  string
	value func(string) bool // nil for a flag
	shown string            // how the error message lists it
}

func between(lo, hi uint64) func(string) bool {
	return func(v string) bool {
		n, err := strconv.ParseUint(v, 10, 32)
		return err == nil && n >= lo && n <= hi
	}
}

func oneOf(vals ...string) func(string) bool {
	return func(v string) bool { return slices.Contains(vals, v) }
}

// allowedOptions can change neither where the mount goes nor how the server
// is reached, and give no way to gain privileges: ports, addresses,
// versions, security flavours and suid stay the backend's. Ranges follow
// the kernel's limits (timeo up to 600 s, 16 connections).
var allowedOptions = []allowedOption{
	{name: "ro"}, {name: "rw"},
	{name: "noatime"}, {name: "nodiratime"}, {name: "relatime"},
	{name: "nosuid"}, {name: "nodev"}, {name: "noexec"},
	{name: "hard"}, {name: "soft"},
	{name: "ac"}, {name: "noac"},
	{name: "timeo", value: between(1, 6000), shown: "timeo=1..6000"},
	{name: "retrans", value: between(0, 100), shown: "retrans=0..100"},
	{name: "rsize", value: between(4096, 1<<20), shown: "rsize=4096..1048576"},
	{name: "wsize", value: between(4096, 1<<20), shown: "wsize=4096..1048576"},
	{name: "actimeo", value: between(0, 3600), shown: "actimeo=0..3600"},
	{name: "acregmin", value: between(0, 3600), shown: "acregmin=0..3600"},
	{name: "acregmax", value: between(0, 3600), shown: "acregmax=0..3600"},
	{name: "acdirmin", value: between(0, 3600), shown: "acdirmin=0..3600"},
	{name: "acdirmax", value: between(0, 3600), shown: "acdirmax=0..3600"},
	{name: "lookupcache", value: oneOf("all", "none", "pos", "positive"), shown: "lookupcache=all|none|pos|positive"},
	{name: "nconnect", value: between(1, 16), shown: "nconnect=1..16"},
	{name: "proto", value: oneOf("tcp"), shown: "proto=tcp"},
}

// CheckMountOptions accepts only the mount options of the allowlist; the
// error for any other lists the accepted ones.
func CheckMountOptions(opts []string) error {
	for _, o := range opts {
		if !allowed(o) {
			return fmt.Errorf("mount option %q is not accepted for nfs volumes; accepted: %s: %w",
				o, acceptedOptions(), backend.ErrInvalid)
		}
	}
	return nil
}

func allowed(opt string) bool {
	k, v, hasValue := strings.Cut(opt, "=")
	for _, a := range allowedOptions {
		if a.name == k {
			return hasValue == (a.value != nil) && (!hasValue || a.value(v))
		}
	}
	return false
}

func acceptedOptions() string {
	names := make([]string, len(allowedOptions))
	for i, a := range allowedOptions {
		names[i] = a.name
		if a.shown != "" {
			names[i] = a.shown
		}
	}
	return strings.Join(names, ", ")
}

// mountParams is everything a kernel NFS mount needs, resolved.
type mountParams struct {
	Source    string // server:/export/name
	Target    string
	Version   string // Version41, Version4 or Version3
	Addr      net.IP // the server's address: the kernel does no DNS
	Port      int    // NFS port; 0 leaves the kernel's default (v4 only)
	MountPort int    // MOUNT port (v3)
	User      []string
}

// mountSpec builds the mount(2) call for p: no mount.nfs helper runs, so
// the options say everything the kernel needs.
func mountSpec(p mountParams) mount.Mount {
	m := mount.Mount{Source: p.Source, Target: p.Target, Type: "nfs4"}
	opts := []string{"vers=" + kernelVersion(p.Version), "addr=" + p.Addr.String(), "proto=tcp"}
	if p.Port != 0 {
		opts = append(opts, "port="+strconv.Itoa(p.Port))
	}
	// hard: the kernel retries for ever rather than return EIO to
	// applications; timeo=600 (60 s) and retrans=2 are nfs(5)'s TCP values.
	opts = append(opts, "hard", "timeo=600", "retrans=2")
	if p.Version == Version3 {
		m.Type = "nfs"
		// nolock: no statd or lockd on the node; locks stay local.
		opts = append(opts, "mountport="+strconv.Itoa(p.MountPort), "mountproto=tcp", "mountvers=3", "nolock")
	}
	m.Options = mergeOptions(opts, p.User)
	return m
}

func kernelVersion(v string) string {
	if v == Version4 {
		return "4.0"
	}
	return v
}

// mergeOptions lets each user option replace the default of the same key,
// where it stands, and appends the others.
func mergeOptions(defaults, user []string) []string {
	out := slices.Clone(defaults)
	for _, u := range user {
		i := slices.IndexFunc(out, func(o string) bool { return optionKey(o) == optionKey(u) })
		if i >= 0 {
			out[i] = u
		} else {
			out = append(out, u)
		}
	}
	return out
}

// optionKey names what an option sets, so that opposite flags (hard and
// soft, ro and rw) replace each other.
func optionKey(o string) string {
	k, _, _ := strings.Cut(o, "=")
	switch k {
	case "soft":
		return "hard"
	case "rw":
		return "ro"
	case "noac":
		return "ac"
	case "relatime":
		return "noatime"
	}
	return k
}
