package blockvol

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/volume/backend"
)

// growEnv is a daemon with short leases (renewals every 100 ms) and a
// backend of node-1 with the copy attacher and a fake file-system grower,
// with volume "v" mounted.
func growEnv(t *testing.T, fsg FSGrower) (*testEnv, *Backend, *fakes, string) {
	t.Helper()
	e := newEnv(t, 300*time.Millisecond)
	b, fk := e.backend("node-1", nil)
	b.cfg.FSGrower = fsg
	e.create(b, "v")
	target := t.TempDir()
	m, err := b.Mount(ctxT(t), "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Unmount(ctxT(t), "v", backend.Options{}, target, m) })
	return e, b, fk, target
}

// A resize of the mounted volume: the renewal tells the backend, which
// grows the device and then the file system on it, and reports; the
// resize returns then, well before the daemon's wait is over.
func TestGrowWhileMounted(t *testing.T) {
	fsg := &fakeFSGrower{}
	e, _, fk, target := growEnv(t, fsg)
	if got := fsg.grown(); len(got) != 1 || got[0] != fmt.Sprintf("%s:%d", target, volSize) {
		t.Fatalf("at mount the file system was checked as %v, want once at %d bytes", got, volSize)
	}
	start := time.Now()
	r, err := e.client.ResizeVolume(ctxT(t), "v", 2*volSize)
	if err != nil || len(r.Pending) != 0 || time.Since(start) > 5*time.Second {
		t.Fatalf("resize: %+v %v after %v", r, err, time.Since(start))
	}
	if got := fsg.grown(); len(got) != 2 || got[1] != fmt.Sprintf("%s:%d", target, 2*volSize) {
		t.Fatalf("file system growths %v, want the second at %d bytes (the device grown first)", got, 2*volSize)
	}
	if a := r.Attachments; len(a) != 1 || a[0].Grown != 2*volSize || a[0].GrowError != "" {
		t.Fatalf("attachments %+v", a)
	}
	time.Sleep(300 * time.Millisecond) // more renewals: nothing grows again
	if n := len(fsg.grown()); n != 2 || fk.att.grows != 1 {
		t.Fatalf("grown again without a new size: %d file system, %d device growths", n, fk.att.grows)
	}
}

// A growth that fails is reported with its reason, which the resize
// answers at once as pending; a backend with no file-system grower says
// so.
func TestGrowFailureReported(t *testing.T) {
	for _, tc := range []struct {
		name string
		fsg  FSGrower
		want string
	}{
		{"ioctl refused", &fakeFSGrower{fail: errors.New("EXT4_IOC_RESIZE_FS: operation not permitted")}, "operation not permitted"},
		{"no grower", nil, "grows no file systems"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _, _, _ := growEnv(t, tc.fsg)
			start := time.Now()
			r, err := e.client.ResizeVolume(ctxT(t), "v", 2*volSize)
			if err != nil || len(r.Pending) != 1 || !strings.Contains(r.Pending[0].Why, tc.want) ||
				!strings.Contains(r.Pending[0].Why, "could not grow") || time.Since(start) > 5*time.Second {
				t.Fatalf("resize: %+v %v after %v", r, err, time.Since(start))
			}
			v, err := e.client.GetVolume(ctxT(t), "v")
			if err != nil || v.Size != 2*volSize || len(v.Attachments) != 1 || !strings.Contains(v.Attachments[0].GrowError, tc.want) {
				t.Fatalf("volume %+v %v", v, err)
			}
		})
	}
}

// A volume grown while detached grows its file system at the next mount.
func TestGrowAtMount(t *testing.T) {
	fsg := &fakeFSGrower{}
	e := newEnv(t, time.Second)
	b, _ := e.backend("node-1", nil)
	b.cfg.FSGrower = fsg
	e.create(b, "v")
	if r, err := e.client.ResizeVolume(ctxT(t), "v", 3*volSize); err != nil || len(r.Pending) != 0 {
		t.Fatalf("resize while detached: %+v %v", r, err)
	}
	target := t.TempDir()
	m, err := b.Mount(ctxT(t), "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Unmount(ctxT(t), "v", backend.Options{}, target, m)
	if got := fsg.grown(); len(got) != 1 || got[0] != fmt.Sprintf("%s:%d", target, 3*volSize) {
		t.Fatalf("file system growths at mount %v", got)
	}
}
