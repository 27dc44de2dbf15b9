package blockvol

import (
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/netvol/netvol/volume/backend"
)

func TestCheckMkfsOptions(t *testing.T) {
	for _, ok := range [][]string{
		nil,
		{"-b", "4096"}, {"-b1024"}, {"-i", "16384"}, {"-I", "256"}, {"-m", "0"}, {"-m50"},
		{"-L", "data"}, {"-L", "a_b.c-d"}, {"-L", "0123456789abcdef"}, {"-N", "100000"},
		{"-O", "metadata_csum,64bit,^quota"}, {"-O", "^metadata_csum"}, {"-Ommp"}, {"-J", "size=64"},
		{"-T", "largefile"}, {"-b", "2048", "-L", "x", "-O", "quota,project", "-m", "1"},
	} {
		if err := CheckMkfsOptions(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range [][]string{
		{"-b", "3000"}, {"-b"}, {"-b", "-4096"}, {"-i", "512"}, {"-i", "+1024"}, {"-i", "1e6"}, {"-I", "100"},
		{"-m", "51"}, {"-m", "0.5"}, {"-m", " 5"}, {"-L", ""}, {"-L", "-F"}, {"-L", "seventeen-chars-x"},
		{"-L", "a b"}, {"-L", "a;rm"}, {"-N", "0"}, {"-N", "99999999999"}, {"-O", "^has_journal"},
		{"-O", "^extent"}, {"-O", "^mmp"}, {"-O", "64bit,^mmp"}, {"-O", "bogus"}, {"-O", "mmp,"}, {"-O", ""}, {"-J", "64"}, {"-J", "size=0"},
		{"-J", "device=/dev/sda"}, {"-T", "floppy2"}, {"-E", "lazy_itable_init=0"}, {"-F"}, {"-F", "-F"},
		{"-q"}, {"-t", "xfs"}, {"--", "-b"}, {"/dev/sda"}, {"4096"}, {""}, {"-"}, {"-d", "/etc"},
		{"-U", "clear"}, {"-c"}, {"-z", "/tmp/undo"}, {"-bb"},
	} {
		err := CheckMkfsOptions(bad)
		if !errors.Is(err, backend.ErrInvalid) || !strings.Contains(err.Error(), "allowed: -b 1024|2048|4096") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestCheckMountOptions(t *testing.T) {
	ok := []string{"noatime", "nodiratime", "relatime", "strictatime", "lazytime", "nosuid", "nodev", "noexec",
		"delalloc", "nodelalloc", "auto_da_alloc", "noauto_da_alloc", "data=ordered", "data=journal",
		"data=writeback", "barrier", "barrier=1", "discard", "nodiscard", "commit=1", "commit=300",
		"errors=remount-ro", "errors=continue"}
	if err := CheckMountOptions(ok); err != nil {
		t.Fatal(err)
	}
	for bad, why := range map[string]string{
		"barrier=0": "power failure", "nobarrier": "power failure", "errors=panic": "crash", "ro": "read-only",
		"rw": "read-only", "commit=0": "", "commit=301": "", "commit=-1": "", "data=bogus": "", "noatime,barrier=0": "",
		"": "", "dax": "", "journal_path=/dev/sda": "", "usrjquota=x": "", "context=system_u": "", "suid": "", "dev": "",
		"exec": "",
	} {
		err := CheckMountOptions([]string{"noatime", bad})
		if !errors.Is(err, backend.ErrInvalid) || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "allowed: noatime") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestMountOptions(t *testing.T) {
	for _, tc := range []struct{ user, want []string }{
		{nil, []string{"errors=remount-ro"}},
		{[]string{"noatime"}, []string{"errors=remount-ro", "noatime"}},
		{[]string{"errors=continue", "discard"}, []string{"errors=continue", "discard"}},
	} {
		if got := mountOptions(tc.user); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("mountOptions(%q) = %q, want %q", tc.user, got, tc.want)
		}
	}
}

// Whatever is accepted is made of plain option characters only: nothing a
// shell or the mount data string could read as more than one thing.
var safeArg = regexp.MustCompile(`^[-a-zA-Z0-9_.=,^]+$`)

func FuzzCheckMkfsOptions(f *testing.F) {
	for _, s := range []string{"-b\x004096", "-L\x00data\x00-O\x00^mmp,quota", "-J\x00size=64", "-m50", "-E\x00x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		if CheckMkfsOptions(args) != nil {
			return
		}
		if !strings.HasPrefix(args[0], "-") {
			t.Fatalf("accepted %q starting with an operand", args)
		}
		for _, a := range args {
			if !safeArg.MatchString(a) || a == "-E" || a == "-F" {
				t.Fatalf("accepted %q", args)
			}
		}
	})
}

func FuzzCheckMountOptions(f *testing.F) {
	for _, s := range []string{"noatime", "commit=5\x00discard", "barrier=0", "errors=remount-ro"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		opts := strings.Split(s, "\x00")
		if CheckMountOptions(opts) != nil {
			return
		}
		for _, o := range opts {
			if !safeArg.MatchString(o) || strings.Contains(o, ",") || o == "barrier=0" || o == "errors=panic" {
				t.Fatalf("accepted %q", opts)
			}
		}
	})
}
