package blockvol

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// What a device holds, as far as Mount cares.
type content int

const (
	contentBlank   content = iota // the first MiB is zeroes
	contentExt                    // an ext2/3/4 superblock
	contentUnknown                // anything else: never formatted over
)

// Probe geometry: the ext superblock starts at byte 1024, its magic
// (s_magic, little endian) 56 bytes into it.
const (
	probeLen     = 1 << 20
	extMagicOff  = 1024 + 56
	extMagic     = 0xEF53
	mkfsOutLimit = 4 << 10
)

// probe reads the start of device and tells what it holds.
func probe(device string) (content, error) {
	f, err := os.Open(device)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, probeLen)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return 0, fmt.Errorf("reading %s: %w", device, err)
	}
	return classify(buf[:n]), nil
}

func classify(b []byte) content {
	switch {
	case len(b) >= extMagicOff+2 && binary.LittleEndian.Uint16(b[extMagicOff:]) == extMagic:
		return contentExt
	case len(b) > 0 && bytes.Count(b, []byte{0}) == len(b):
		return contentBlank
	}
	return contentUnknown
}

// prepare makes sure device holds an ext file system: a blank one is
// formatted, one holding something else is refused.
func (b *Backend) prepare(ctx context.Context, device string, mkfsOpts []string) error {
	c, err := probe(device)
	if err != nil {
		return fmt.Errorf("probing %s: %w", device, err)
	}
	switch c {
	case contentExt:
		return nil
	case contentUnknown:
		return fmt.Errorf("%s holds data but no ext4 file system (not blank either): refusing to format it; "+
			"inspect the volume, or remove it and create it again", device)
	}
	if err := b.cfg.Formatter.Format(ctx, device, mkfsOpts); err != nil {
		return fmt.Errorf("formatting %s: %w", device, err)
	}
	return nil
}

// Mkfs formats with mkfs.ext4, the only program netvol runs. Arguments go
// to it as an argv, never through a shell.
type Mkfs struct {
	// Path is the program; "" means mkfs.ext4 found on PATH.
	Path string
}

// mkfsBase returns the arguments always given: quiet, no questions (the target
// may be a regular file or hold an old signature wipefs would name), and
// inode tables and journal initialised lazily (by the kernel after mount),
// so that formatting a large volume takes seconds; no discard of the whole
// device, which would only make the server punch holes it already has;
// multi-mount protection with the shortest update interval (see mmp.go).
// All extended options go in one -E: mkfs.ext4 keeps only the last.
func mkfsBase() []string {
	return []string{"-q", "-F", "-O", "mmp",
		"-E", fmt.Sprintf("lazy_itable_init=1,lazy_journal_init=1,nodiscard,mmp_update_interval=%d", mkfsMMPInterval)}
}

// Format runs mkfs.ext4 on device with the checked extra options.
func (m Mkfs) Format(ctx context.Context, device string, opts []string) error {
	if err := CheckMkfsOptions(opts); err != nil {
		return err
	}
	path := m.Path
	if path == "" {
		path = "mkfs.ext4"
	}
	args := append(append(mkfsBase(), opts...), "--", device)
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C") // messages we can quote
	out := &tailBuffer{limit: mkfsOutLimit}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", path, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	limit int
	b     []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.limit {
		t.b = append(t.b[:0], t.b[len(t.b)-t.limit:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
