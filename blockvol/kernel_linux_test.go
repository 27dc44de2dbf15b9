package blockvol

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// The build machines have no NBD driver (TESTING.md): the attach itself is
// tested in node VMs. Here: the dialing, the device description and the
// idempotent detach.

func TestKernelAttacherDialsAndConfigures(t *testing.T) {
	e := newEnv(t, 0)
	b, _ := e.backend("node-1", nil)
	e.create(b, "v")
	ctx := ctxT(t)
	g, err := e.client.Attach(ctx, "v", "node-1", api.ModeRW)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var info nbd.ExportInfo
	dial := func(ctx context.Context) (net.Conn, nbd.ExportInfo, error) {
		c, i, err := b.dialer(e.nbdL.Addr().String(), g.Export)(ctx)
		if err == nil {
			conns, info = append(conns, c), i
		}
		return c, i, err
	}
	_, err = KernelAttacher{}.Attach(ctx, Target{Volume: "v", Dial: dial})
	if err == nil {
		t.Skip("this kernel has the NBD driver: the attach is tested in the node VMs")
	}
	if !errors.Is(err, nbd.ErrNoKernelNBD) {
		t.Fatalf("attach: %v", err)
	}
	if len(conns) != DefaultKernelConnections || info.Flags&nbd.FlagCanMultiConn == 0 {
		t.Fatalf("%d connections for flags %v", len(conns), info.Flags)
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("a connection was left open: %v", err)
		}
	}
	cfg := KernelAttacher{Timeout: 5 * time.Second}.config(info)
	if cfg.Index != -1 || cfg.Size != volSize || cfg.Flags != info.Flags || cfg.BlockSize != 4096 ||
		cfg.Timeout != 5*time.Second || cfg.DeadConnTimeout != DefaultKernelDeadConnTimeout {
		t.Fatalf("kernel config %+v", cfg)
	}
	info.Size = volSize + 512
	if bs := (KernelAttacher{}).config(info).BlockSize; bs != 512 {
		t.Fatalf("block size %d for a size not a multiple of 4096", bs)
	}
	for _, tc := range []struct {
		multi bool
		want  int
	}{{true, 4}, {false, 1}} {
		conns = nil
		KernelAttacher{Connections: 4}.Attach(ctx, Target{Volume: "v", Dial: func(ctx context.Context) (net.Conn, nbd.ExportInfo, error) {
			c, i, err := dial(ctx)
			if !tc.multi {
				i.Flags &^= nbd.FlagCanMultiConn
			}
			return c, i, err
		}})
		if len(conns) != tc.want {
			t.Fatalf("CAN_MULTI_CONN %v: %d connections, want %d", tc.multi, len(conns), tc.want)
		}
	}
}

func TestKernelDetach(t *testing.T) {
	for _, bad := range []string{"", "/dev/loop0", "/dev/nbd", "/dev/nbd-1", "/dev/nbd01", "/dev/nbd1p1", "/dev/nbdx"} {
		if err := (KernelAttacher{}).Detach(context.Background(), Device{Path: bad}); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("Detach(%q) = %v", bad, err)
		}
	}
	if err := (KernelAttacher{}).Detach(context.Background(), Device{Path: "/dev/nbd0", Method: "fuse"}); !errors.Is(err, backend.ErrInvalid) {
		t.Errorf("detach of another method's device: %v", err)
	}
	// No such device (or no driver at all): nothing to do.
	if err := (KernelAttacher{}).Detach(context.Background(), Device{Path: "/dev/nbd65535", Method: MethodKernel}); err != nil {
		t.Fatalf("detach of a missing device: %v", err)
	}
}
