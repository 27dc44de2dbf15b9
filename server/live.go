package server

import (
	"fmt"
	"sync"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/qcow2"
)

// liveImage is what every NBD export of a volume serves: the volume's
// current image behind a lock that lets the daemon switch images between
// requests. Each request holds it shared for its own duration; a switch
// (a snapshot freezing the image as a layer, a rollback, a reopen after a
// layer left the chain) holds it exclusively, so it waits for the
// requests in flight, and new ones wait for it: the client sees a slower
// request, never an error or a reconnect. Switches happen under the
// service lock only, which is why the service may read img without mu.
type liveImage struct {
	volume string
	mu     sync.RWMutex
	img    *qcow2.Image // nil after a failed switch: requests fail until the volume is opened again
}

var (
	_ nbd.Backend    = (*liveImage)(nil)
	_ nbd.ZeroWriter = (*liveImage)(nil)
)

func (l *liveImage) unavailable() error {
	return fmt.Errorf("volume %q: its image could not be opened again after a snapshot, rollback or merge; detach and attach it again", l.volume)
}

// ReadAt implements nbd.Backend.
func (l *liveImage) ReadAt(p []byte, off int64) (int, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.img == nil {
		return 0, l.unavailable()
	}
	return l.img.ReadAt(p, off)
}

// WriteAt implements nbd.Backend.
func (l *liveImage) WriteAt(p []byte, off int64) (int, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.img == nil {
		return 0, l.unavailable()
	}
	return l.img.WriteAt(p, off)
}

// Size implements nbd.Backend.
func (l *liveImage) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.img == nil {
		return 0
	}
	return l.img.Size()
}

// Flush implements nbd.Backend.
func (l *liveImage) Flush() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.img == nil {
		return l.unavailable()
	}
	return l.img.Flush()
}

// Discard implements nbd.Backend.
func (l *liveImage) Discard(off, n int64) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.img == nil {
		return l.unavailable()
	}
	return l.img.Discard(off, n)
}

// WriteZeroes implements nbd.ZeroWriter.
func (l *liveImage) WriteZeroes(off, n int64, mayTrim bool) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.img == nil {
		return l.unavailable()
	}
	return l.img.WriteZeroes(off, n, mayTrim)
}

// pause waits for the requests in flight and holds new ones until resume.
func (l *liveImage) pause() { l.mu.Lock() }

// resume lets requests go on against img.
func (l *liveImage) resume(img *qcow2.Image) {
	l.img = img
	l.mu.Unlock()
}
