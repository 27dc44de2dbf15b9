package blockvol

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netvol/netvol/volume/backend"
)

func TestClassify(t *testing.T) {
	ext := make([]byte, 4096)
	ext[1080], ext[1081] = 0x53, 0xEF
	junk := make([]byte, probeLen)
	junk[probeLen-1] = 1
	xfs := append([]byte("XFSB"), make([]byte, 4092)...)
	for name, tc := range map[string]struct {
		b    []byte
		want content
	}{
		"blank":          {make([]byte, probeLen), contentBlank},
		"small blank":    {make([]byte, 4096), contentBlank},
		"ext":            {ext, contentExt},
		"last byte set":  {junk, contentUnknown},
		"xfs":            {xfs, contentUnknown},
		"empty device":   {nil, contentUnknown},
		"short, no ext":  {[]byte{0, 0, 1}, contentUnknown},
		"magic reversed": {append(make([]byte, 1080), 0xEF, 0x53), contentUnknown},
	} {
		if got := classify(tc.b); got != tc.want {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

func sparseFile(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dev")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path
}

// The real formatter on a file: an ext4 superblock with our label, found
// by probe; options are checked before anything runs.
func TestMkfsFormatsFile(t *testing.T) {
	mkfs := needMkfs(t)
	dev := sparseFile(t, 64<<20)
	if c, err := probe(dev); err != nil || c != contentBlank {
		t.Fatalf("before: %v %v", c, err)
	}
	if err := mkfs.Format(ctxT(t), dev, []string{"-L", "vol-1", "-b", "4096", "-O", "^metadata_csum"}); err != nil {
		t.Fatal(err)
	}
	sb := make([]byte, 1024)
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(sb, 1024); err != nil {
		t.Fatal(err)
	}
	// s_magic at 56, s_log_block_size at 24 (4096 = 1024<<2), s_volume_name at 120.
	if sb[56] != 0x53 || sb[57] != 0xEF || sb[24] != 2 || string(bytes.TrimRight(sb[120:136], "\x00")) != "vol-1" {
		t.Fatalf("superblock: magic %x %x, log block size %d, label %q", sb[56], sb[57], sb[24], sb[120:136])
	}
	if c, err := probe(dev); err != nil || c != contentExt {
		t.Fatalf("after: %v %v", c, err)
	}

	err = mkfs.Format(ctxT(t), dev, []string{"-E", "discard"})
	if !errors.Is(err, backend.ErrInvalid) {
		t.Fatalf("unchecked option ran: %v", err)
	}
	err = Mkfs{Path: "/usr/sbin/mkfs.ext4"}.Format(ctxT(t), filepath.Join(t.TempDir(), "missing"), nil)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("mkfs of a missing file: %v", err)
	}
}

// Lazy init makes formatting a large volume quick: a sparse 100 GiB file
// takes seconds, and little space.
func TestMkfsLargeSparseIsFast(t *testing.T) {
	if testing.Short() {
		t.Skip("formats a 100 GiB sparse file")
	}
	mkfs := needMkfs(t)
	dev := sparseFile(t, 100<<30)
	start := time.Now()
	if err := mkfs.Format(ctxT(t), dev, nil); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	var st syscall.Stat_t
	if err := syscall.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("mkfs.ext4 of a sparse 100 GiB file: %v, %d MiB written", took.Round(time.Millisecond), st.Blocks*512>>20)
	if took > 30*time.Second {
		t.Fatalf("mkfs took %v: lazy init is not in effect", took)
	}
}
