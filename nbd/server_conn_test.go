package nbd

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// peakBackend records how many writes run at once.
type peakBackend struct {
	*memBackend
	cur, peak atomic.Int64
}

func (b *peakBackend) WriteAt(p []byte, off int64) (int, error) {
	n := b.cur.Add(1)
	defer b.cur.Add(-1)
	for {
		old := b.peak.Load()
		if n <= old || b.peak.CompareAndSwap(old, n) {
			break
		}
	}
	return b.memBackend.WriteAt(p, off)
}

// TestWorkersBounded: a connection runs its requests concurrently, never
// more than MaxInFlight at once, and its workers end with it.
func TestWorkersBounded(t *testing.T) {
	be := &peakBackend{memBackend: newMem(1 << 20)}
	be.delay.Store(int64(10 * time.Millisecond))
	var exports ExportMap
	exports.Add(&Export{Name: "disk", Backend: be})
	addr := serve(t, &Server{Exports: &exports, MaxInFlight: 4}, "unix")
	before := runtime.NumGoroutine()
	c := dial(t, "unix", addr, "disk")
	for round := range 3 {
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				if err := c.Write(testCtx(t), pattern(512, byte(i)), int64(i)*512, 0); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if p := be.peak.Load(); p > 4 || p < 2 {
			t.Fatalf("round %d: %d writes ran at once, want 2 to MaxInFlight (4)", round, p)
		}
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after the connection ended, %d before it", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
