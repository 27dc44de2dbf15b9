package blockvol

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"slices"
	"time"

	"github.com/sirupsen/logrus"
)

// ext4 multi-mount protection (MMP) is the second guard against two hosts
// writing one volume, after the storage server's leases and fencing.
// Volumes are formatted with it (mkfsBase). A mounted file system's kernel
// thread stamps a random sequence number into the MMP block every update
// interval; a clean unmount stamps "clean". Mounting a file system whose
// block is not clean makes the kernel watch the block for a while (twice
// 2*interval+1 seconds, at least 22 s) to see whether another host is
// still stamping it; a clean one mounts without waiting.
//
// The block is left unclean by a host that crashed or was cut off while
// it had the volume mounted: exactly the case of a takeover. There the
// storage server has already fenced that host (Grant.Fenced): its
// connections are closed and nothing it sends reaches the image any more,
// so it cannot be stamping the block, and the kernel's wait would only
// push the mount past Docker's deadline. checkMMP therefore resets the
// block to clean when the host that last stamped it is one the attach
// fenced. The MMP block names the last writer by its host name, so this
// relies on node names being host names (the plugin's default).
//
// The block is also left unclean by this host itself when its mount ended
// without an unmount: an upgrade of the managed plugin (disable -f) kills
// the userspace attach helpers with the plugin's container, and the next
// Mount attaches afresh. The old attachment was detached (its export
// revoked) or is fenced by this attach, and this host can see whether its
// own old mount still writes (mmplive.go): when it does not, the block is
// reset too.
//
// In every other case (a writer the leases do not know of) the block is
// checked: by the kernel when its wait fits in the call's deadline, else
// by Mount in half the time (awaitMMP), so that Docker gets an answer in
// time.

// Superblock fields (offsets into the superblock, at byte 1024).
const (
	sbOffset             = 1024
	sbSize               = 1024
	sbLogBlockSize       = 0x18
	sbFeatureIncompat    = 0x60
	sbFeatureROCompat    = 0x64
	sbUUID               = 0x68
	sbMMPUpdateInterval  = 0x166
	sbMMPBlock           = 0x168
	sbChecksumSeed       = 0x270
	incompatMMP          = 0x0100
	incompatCsumSeed     = 0x2000
	roCompatMetadataCsum = 0x0400
)

// MMP block fields (struct mmp_struct).
const (
	mmpSize             = 1024
	mmpMagicOff         = 0
	mmpSeqOff           = 4
	mmpNodenameOff      = 16
	mmpNodenameLen      = 64
	mmpCheckIntervalOff = 112
	mmpChecksumOff      = 1020
	mmpMagic            = 0x004D4D50
	mmpSeqClean         = 0xFF4D4D50
	mmpSeqFsck          = 0xE24D4D50
	mmpMinInterval      = 5 // EXT4_MMP_MIN_CHECK_INTERVAL, seconds
)

// mkfsMMPInterval is the update interval new file systems get: the
// kernel's minimum, so that an unclean mount waits as little as it can.
const mkfsMMPInterval = mmpMinInterval

// mmpBlock is a file system's MMP block as read from its device.
type mmpBlock struct {
	off      int64 // byte offset on the device
	raw      [mmpSize]byte
	interval int    // seconds the kernel would use between checks
	csum     bool   // the file system has metadata checksums
	csumSeed uint32 // their seed
	uuid     [16]byte
}

func (m *mmpBlock) seq() uint32 { return binary.LittleEndian.Uint32(m.raw[mmpSeqOff:]) }

// node is the host name of the last writer.
func (m *mmpBlock) node() string {
	return string(bytes.TrimRight(m.raw[mmpNodenameOff:mmpNodenameOff+mmpNodenameLen], "\x00"))
}

// kernelWait is how long the kernel's mount of a file system with this
// block not clean waits before it mounts (fs/ext4/mmp.c).
func (m *mmpBlock) kernelWait() time.Duration {
	w := min(2*m.interval+1, m.interval+60)
	return 2 * time.Duration(w) * mmpSecond
}

// mmpSecond is the kernel's second; tests shorten it.
var mmpSecond = time.Second

// readMMP reads the MMP block of the ext file system on device; nil when
// the file system has no MMP.
func readMMP(device string) (*mmpBlock, error) {
	f, err := os.Open(device)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sb := make([]byte, sbSize)
	if _, err := f.ReadAt(sb, sbOffset); err != nil {
		return nil, fmt.Errorf("reading the superblock of %s: %w", device, err)
	}
	le := binary.LittleEndian
	if le.Uint32(sb[sbFeatureIncompat:])&incompatMMP == 0 {
		return nil, nil
	}
	logBlock := le.Uint32(sb[sbLogBlockSize:])
	if logBlock > 6 {
		return nil, fmt.Errorf("%s: superblock gives a block size of 2^(10+%d)", device, logBlock)
	}
	m := &mmpBlock{off: int64(le.Uint64(sb[sbMMPBlock:])) << (10 + logBlock),
		csum: le.Uint32(sb[sbFeatureROCompat:])&roCompatMetadataCsum != 0, csumSeed: csumSeed(sb)}
	copy(m.uuid[:], sb[sbUUID:])
	// Past the page cache: another host's stamps reach the device, not
	// this host's cache of it.
	if err := readDirect(device, m.raw[:], m.off); err != nil {
		return nil, fmt.Errorf("reading the MMP block of %s: %w", device, err)
	}
	if le.Uint32(m.raw[mmpMagicOff:]) != mmpMagic {
		return nil, fmt.Errorf("%s: the MMP block at byte %d has no MMP magic number", device, m.off)
	}
	m.interval = max(int(le.Uint16(sb[sbMMPUpdateInterval:])), int(le.Uint16(m.raw[mmpCheckIntervalOff:])), mmpMinInterval)
	return m, nil
}

// csumSeed is the seed of the file system's metadata checksums.
func csumSeed(sb []byte) uint32 {
	if binary.LittleEndian.Uint32(sb[sbFeatureIncompat:])&incompatCsumSeed != 0 {
		return binary.LittleEndian.Uint32(sb[sbChecksumSeed:])
	}
	return crc32c(^uint32(0), sb[sbUUID:sbUUID+16])
}

// crc32c is the kernel's crc32c(seed, p): no inversion on the way in or
// out, unlike hash/crc32's. (MakeTable caches the Castagnoli table.)
func crc32c(seed uint32, p []byte) uint32 {
	return ^crc32.Update(^seed, crc32.MakeTable(crc32.Castagnoli), p)
}

// checksum is what the block's checksum field should hold.
func (m *mmpBlock) checksum() uint32 { return crc32c(m.csumSeed, m.raw[:mmpChecksumOff]) }

// markClean stamps the block clean, as a clean unmount does, and writes it
// to device durably.
func (m *mmpBlock) markClean(device string) error {
	binary.LittleEndian.PutUint32(m.raw[mmpSeqOff:], mmpSeqClean)
	if m.csum {
		binary.LittleEndian.PutUint32(m.raw[mmpChecksumOff:], m.checksum())
	}
	f, err := os.OpenFile(device, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(m.raw[:], m.off); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkMMP readies device's multi-mount protection for mounting name. A
// block left unclean by a host this attach fenced is reset to clean, and
// so is one left by this host when no file system of this host still
// writes it (selfWriterGone). Any other unclean block is checked: by the
// kernel at mount when its wait fits in ctx's deadline, else here, in less
// time (watchMMP). A file system being checked by e2fsck somewhere is
// refused.
func (b *Backend) checkMMP(ctx context.Context, device, name string, fenced []string) error {
	m, err := readMMP(device)
	if err != nil {
		return fmt.Errorf("reading the file system's multi-mount protection block: %w", err)
	}
	if m == nil || m.seq() == mmpSeqClean {
		return nil
	}
	if m.seq() == mmpSeqFsck {
		return fmt.Errorf("e2fsck on host %q is checking the file system (its multi-mount protection block says so): wait for it to finish", m.node())
	}
	log := b.cfg.Log.WithFields(logrus.Fields{"volume": name, "node": b.cfg.Node, "last_writer": m.node()})
	if slices.Contains(fenced, m.node()) {
		if err := m.markClean(device); err != nil {
			return fmt.Errorf("resetting the multi-mount protection block left by fenced node %q: %w", m.node(), err)
		}
		log.Info("file system left mounted by a node the storage server fenced: multi-mount protection reset to clean")
		return nil
	}
	if h := b.hostName(); h != "" && m.node() == h {
		gone, why := selfWriterGone(m.uuid)
		if gone {
			if err := m.markClean(device); err != nil {
				return fmt.Errorf("resetting the multi-mount protection block left by this host: %w", err)
			}
			log.Info("file system left mounted by this host, whose mount of it is gone or no longer answers: multi-mount protection reset to clean")
			return nil
		}
		log = log.WithField("why", why)
	}
	return b.awaitMMP(ctx, m, device, log)
}

// awaitMMP leaves the check of an unclean block to the kernel's mount when
// its wait fits in ctx's deadline, and logs it (the mount takes that much
// longer). Otherwise it does the check itself, shorter: a block the last
// writer still stamps refuses the mount; one that stays the same is reset
// to clean. When even that does not fit, the mount fails at once rather
// than past the deadline.
func (b *Backend) awaitMMP(ctx context.Context, m *mmpBlock, device string, log logrus.FieldLogger) error {
	if left, ok := timeLeft(ctx); !ok || left-mmpMargin >= m.kernelWait() {
		log.WithField("wait", m.kernelWait()).Warn("file system not cleanly unmounted by a host this attach did not fence: " +
			"the kernel checks that nobody else writes it before mounting")
		return nil
	}
	if left, _ := timeLeft(ctx); left-mmpMargin < m.watchTime() {
		return fmt.Errorf("file system not cleanly unmounted by host %q, which the storage server did not fence: "+
			"checking that it no longer writes takes %s (the kernel's takes %s), more than the %s this call has left",
			m.node(), m.watchTime(), m.kernelWait(), left.Round(time.Second))
	}
	log.WithField("wait", m.watchTime()).Warn("file system not cleanly unmounted by a host this attach did not fence: " +
		"checking that nobody else writes it (the kernel's check would outlast the call)")
	stamped, err := watchMMP(ctx, device, m)
	switch {
	case err != nil:
		return fmt.Errorf("watching the multi-mount protection block: %w", err)
	case stamped:
		return fmt.Errorf("host %q is writing the file system (its multi-mount protection block changed while watched): not mounted", m.node())
	}
	if err := m.markClean(device); err != nil {
		return fmt.Errorf("resetting the multi-mount protection block left by host %q: %w", m.node(), err)
	}
	log.Info("nobody wrote the multi-mount protection block while watched: reset to clean")
	return nil
}

// mmpMargin is kept of the call's deadline for the mount itself once the
// multi-mount protection check is done (a variable for tests).
var mmpMargin = 2 * time.Second

// timeLeft is the time to ctx's deadline; false when it has none.
func timeLeft(ctx context.Context) (time.Duration, bool) {
	dl, ok := ctx.Deadline()
	return time.Until(dl), ok
}

// watchTime is how long watchMMP watches: the first of the kernel's two
// waits. The kernel's second wait (after stamping a sequence of its own)
// catches a host mounting at the same time; the storage server's lease,
// which this host holds, rules that out for netvol's hosts.
func (m *mmpBlock) watchTime() time.Duration { return m.kernelWait() / 2 }

// watchMMP reports whether anybody stamps device's MMP block within
// watchTime of m being read. Reads bypass the page cache.
func watchMMP(ctx context.Context, device string, m *mmpBlock) (bool, error) {
	if err := sleep(ctx, m.watchTime()); err != nil {
		return false, err
	}
	now, err := readMMP(device)
	if err != nil {
		return false, err
	}
	return now == nil || now.off != m.off || now.seq() != m.seq(), nil
}

// hostName is this host's name as its kernel stamps MMP blocks.
func (b *Backend) hostName() string {
	h := b.cfg.HostName
	if len(h) > mmpNodenameLen-1 {
		h = h[:mmpNodenameLen-1]
	}
	return h
}
