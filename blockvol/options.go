package blockvol

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/netvol/netvol/volume/backend"
)

// mkfsAllowed lists the accepted mkfs.ext4 options, for error messages.
const mkfsAllowed = "-b 1024|2048|4096, -i BYTES-PER-INODE (1024-67108864), -I 128|256|512|1024, " +
	"-m RESERVED-PERCENT (0-50), -L LABEL (1-16 of A-Z a-z 0-9 _ . -, starting with a letter or digit), " +
	"-N INODES, -O FEATURE[,FEATURE...] (" + featuresOn + "; ^FEATURE turns off any of them but has_journal, extent and mmp), " +
	"-J size=MiB (1-10240), -T default|small|big|huge|news|largefile|largefile4"

const featuresOn = "has_journal, extent, metadata_csum, 64bit, mmp, dir_index, dir_nlink, extra_isize, flex_bg, huge_file, inline_data, large_dir, project, quota"

var labelRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,15}$`)

// CheckMkfsOptions accepts the extra mkfs.ext4 arguments netvol allows: a
// short list of options, each with a checked value, given as "-b", "4096"
// or "-b4096". Everything else is refused with an error wrapping
// backend.ErrInvalid that lists what is accepted.
func CheckMkfsOptions(args []string) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' || !mkfsKnown(a[1]) {
			return fmt.Errorf("mkfs option %q is not allowed; allowed: %s: %w", a, mkfsAllowed, backend.ErrInvalid)
		}
		flag, val := a[:2], a[2:]
		if val == "" {
			if i+1 == len(args) {
				return fmt.Errorf("mkfs option %s needs a value; allowed: %s: %w", flag, mkfsAllowed, backend.ErrInvalid)
			}
			i++
			val = args[i]
		}
		if !mkfsValueOK(flag[1], val) {
			return fmt.Errorf("mkfs option %s %q: bad value; allowed: %s: %w", flag, val, mkfsAllowed, backend.ErrInvalid)
		}
	}
	return nil
}

func mkfsKnown(f byte) bool { return strings.IndexByte("biImLNOJT", f) >= 0 }

// mkfsValueOK checks the value of option -f.
func mkfsValueOK(f byte, v string) bool {
	switch f {
	case 'b':
		return oneOf(v, "1024", "2048", "4096")
	case 'i':
		return uintIn(v, 1024, 64<<20)
	case 'I':
		return oneOf(v, "128", "256", "512", "1024")
	case 'm':
		return uintIn(v, 0, 50)
	case 'L':
		return labelRe.MatchString(v)
	case 'N':
		return uintIn(v, 1, 1<<32-1)
	case 'O':
		return featuresOK(v)
	case 'J':
		n, ok := strings.CutPrefix(v, "size=")
		return ok && uintIn(n, 1, 10240)
	case 'T':
		return oneOf(v, "default", "small", "big", "huge", "news", "largefile", "largefile4")
	}
	return false
}

// featuresOK checks a -O list. A journal and extents are what make ext4
// safe and fast after a crash of the host, and multi-mount protection
// guards against two hosts writing at once (mmp.go); they cannot be turned
// off.
func featuresOK(v string) bool {
	for f := range strings.SplitSeq(v, ",") {
		name, off := strings.CutPrefix(f, "^")
		if !slices.Contains(strings.Split(featuresOn, ", "), name) || off && (name == "has_journal" || name == "extent" || name == "mmp") {
			return false
		}
	}
	return true
}

func oneOf(v string, allowed ...string) bool { return slices.Contains(allowed, v) }

// uintIn accepts decimal digits only (no sign, no spaces) in [lo, hi].
func uintIn(v string, lo, hi uint64) bool {
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return err == nil && n >= lo && n <= hi
}

// mountAllowed lists the accepted ext4 mount options, for error messages.
const mountAllowed = "noatime, nodiratime, relatime, strictatime, lazytime, nosuid, nodev, noexec, " +
	"delalloc, nodelalloc, auto_da_alloc, noauto_da_alloc, data=ordered|journal|writeback, " +
	"barrier, barrier=1, discard, nodiscard, commit=SECONDS (1-300), errors=remount-ro|continue"

// mountRefused says why some options people reach for are refused.
func mountRefused(o string) string {
	switch o {
	case "barrier=0", "nobarrier":
		return " (writes acknowledged by a flush could be lost on a power failure)"
	case "errors=panic":
		return " (an I/O error on the volume would crash the host)"
	case "ro", "rw":
		return " (nbd volumes are mounted read-write; make the container's mount read-only instead)"
	}
	return ""
}

// CheckMountOptions accepts the extra ext4 mount options netvol allows;
// everything else is refused with an error wrapping backend.ErrInvalid
// that lists what is accepted.
func CheckMountOptions(opts []string) error {
	for _, o := range opts {
		if !mountOptionOK(o) {
			return fmt.Errorf("mount option %q is not allowed%s; allowed: %s: %w", o, mountRefused(o), mountAllowed, backend.ErrInvalid)
		}
	}
	return nil
}

func mountOptionOK(o string) bool {
	if n, ok := strings.CutPrefix(o, "commit="); ok {
		return uintIn(n, 1, 300)
	}
	return oneOf(o, "noatime", "nodiratime", "relatime", "strictatime", "lazytime", "nosuid", "nodev", "noexec",
		"delalloc", "nodelalloc", "auto_da_alloc", "noauto_da_alloc", "data=ordered", "data=journal", "data=writeback",
		"barrier", "barrier=1", "discard", "nodiscard", "errors=remount-ro", "errors=continue")
}

// defaultMountOptions apply unless the user's options set the same key.
// errors=remount-ro: after an I/O error (a server gone for longer than the
// kernel waits) the file system stops writing instead of going on with a
// hole in its metadata.
func defaultMountOptions() []string { return []string{"errors=remount-ro"} }

// mountOptions merges the defaults with the user's checked options.
func mountOptions(user []string) []string {
	key := func(o string) string { k, _, _ := strings.Cut(o, "="); return k }
	var out []string
	for _, d := range defaultMountOptions() {
		if !slices.ContainsFunc(user, func(u string) bool { return key(u) == key(d) }) {
			out = append(out, d)
		}
	}
	return append(out, user...)
}
