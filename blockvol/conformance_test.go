package blockvol

import (
	"testing"

	"github.com/netvol/netvol/volume/backend"
	"github.com/netvol/netvol/volume/backend/backendtest"
)

// TestConformance runs the backend contract's suite against the nbd
// backend and a real storage daemon in process. Attach, mkfs and mount are
// the tests' fakes (a copy of the export as the device, a recording
// mounter), so the mount cases run without a kernel NBD client.
func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b, _ := newEnv(t, 0).backend("node-1", nil)
		return b
	}, backendtest.Caps{Base: backend.Options{Size: volSize, FS: "ext4", UID: -1, GID: -1}, Mount: true})
}
