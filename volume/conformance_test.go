package volume

import (
	"testing"

	"github.com/netvol/netvol/volume/backend"
	"github.com/netvol/netvol/volume/backend/backendtest"
)

// TestFakeConformance holds the driver's fake to the backend contract, the
// suite the real backends pass too.
func TestFakeConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return newFakeBackend(&fakeHost{points: map[string]bool{}})
	}, backendtest.Caps{Base: backend.Options{UID: -1, GID: -1}, Mount: true})
}
