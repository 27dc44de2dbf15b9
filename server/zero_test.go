package server

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/netvol/netvol/nbd"
)

// Issue 12: TRIM and WRITE_ZEROES of the end of a volume whose size is not a
// multiple of the cluster size change exactly the bytes asked for, through
// the daemon's own export. A zero-length TRIM at the end changes nothing.
func TestNBDZeroingNearEnd(t *testing.T) {
	const size = 64<<20 + 8<<10 // a multiple of 512, not of 64 KiB
	s, _ := newService(t)
	_, sock := serveNBD(t, s)
	mustCreate(t, s, "vol", size, "")
	g := mustAttach(t, s, "vol", "n1", "rw")
	ctx := context.Background()
	cl, err := nbd.Dial(ctx, "unix", sock, nbd.ClientOptions{ExportName: g.Export})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const lo = 64 << 20 // the last, partial cluster: [64M, 64M+8K)
	for _, op := range []struct {
		name   string
		off, n int64
		do     func(off, n int64) error
	}{
		{"trim", lo + 4096, 4096, func(off, n int64) error { return cl.Trim(ctx, off, n, 0) }},
		{"write zeroes", lo + 4096, 4096, func(off, n int64) error { return cl.WriteZeroes(ctx, off, n, 0) }},
		{"write zeroes, no hole", lo + 4096, 4096, func(off, n int64) error { return cl.WriteZeroes(ctx, off, n, nbd.CmdFlagNoHole) }},
		{"trim, fua", lo + 512, 512, func(off, n int64) error { return cl.Trim(ctx, off, n, nbd.CmdFlagFUA) }},
		{"zero-length trim at the end", size, 0, func(off, n int64) error { return cl.Trim(ctx, off, n, 0) }},
		{"zero-length write zeroes at the end", size, 0, func(off, n int64) error { return cl.WriteZeroes(ctx, off, n, 0) }},
		{"trim across the last boundary", lo - 4096, 8192, func(off, n int64) error { return cl.Trim(ctx, off, n, 0) }},
	} {
		fill := bytes.Repeat([]byte{0xaa}, 64<<10+8<<10)
		if err := cl.Write(ctx, fill, lo-64<<10, 0); err != nil {
			t.Fatal(err)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := op.do(op.off, op.n); err != nil {
			t.Fatalf("%s of %d bytes at %d: %v", op.name, op.n, op.off, err)
		}
		want := bytes.Clone(fill)
		clear(want[op.off-(lo-64<<10) : op.off-(lo-64<<10)+op.n])
		got := make([]byte, len(want))
		if err := cl.Read(ctx, got, lo-64<<10); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s of %d bytes at %d: %s", op.name, op.n, op.off, diffAt(got, want, lo-64<<10))
		}
	}
	cl.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "qemu-img", "check", "-f", "qcow2", filepath.Join(s.dir, "vol.qcow2"))
}

func diffAt(got, want []byte, base int64) string {
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("byte %d reads %#x, want %#x", base+int64(i), got[i], want[i])
		}
	}
	return "equal"
}
