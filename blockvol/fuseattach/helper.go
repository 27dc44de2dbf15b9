package fuseattach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/qcow2"
)

// HelperConfig is what an attach helper reads on its stdin. The export
// name is a credential, so it never goes in argv or the environment, which
// /proc shows.
type HelperConfig struct {
	Volume string `json:"volume,omitempty"` // for logs and status only
	Addr   string `json:"addr,omitempty"`   // the NBD server: host:port or unix:/path
	Export string `json:"export,omitempty"`
	// Image, instead of Addr and Export, serves a local qcow2 image: the
	// reference of the benchmark (the same chain without the NBD hop).
	Image            string        `json:"image,omitempty"`
	ReconnectTimeout time.Duration `json:"reconnect_timeout,omitempty"`
	RequestTimeout   time.Duration `json:"request_timeout,omitempty"`
	ReplayLimit      int64         `json:"replay_limit,omitempty"`
	Connections      int           `json:"connections,omitempty"`
}

// startReport is the one line a helper writes on its status descriptor
// once the device is there, or it failed.
type startReport struct {
	Device string `json:"device,omitempty"`
	DIO    bool   `json:"dio,omitempty"`
	Error  string `json:"error,omitempty"`
}

const (
	maxConfig       = 64 << 10
	unbindTimeout   = 10 * time.Second
	unmountTimeout  = 10 * time.Second
	closeTimeout    = 3 * time.Minute // the last flush
	replyWriteLimit = 5 * time.Second
)

// helper is one attachment: the export, served as <dir>/fuse/disk, on a
// loop device.
type helper struct {
	dir      string
	cfg      HelperConfig
	log      logrus.FieldLogger
	session  *Session     // nil when serving an image
	image    *qcow2.Image // nil when serving NBD
	fuse     *fuse.Server
	disk     *diskNode // the FUSE file
	fuseDone chan struct{}
	loop     *loopDevice
	device   string // the loop device, kept after loop is released
	ctl      net.Listener
}

// RunHelper is the attach helper process (netvol attach-helper): it reads
// a HelperConfig from config, makes the device, reports it on status (one
// JSON line, then closed) and serves until a "stop" on its control socket
// or SIGTERM finds the device unused. The plugin starts it in a session of
// its own, so it outlives the plugin; a new plugin finds it again by dir.
func RunHelper(ctx context.Context, dir string, config io.Reader, status io.WriteCloser, log logrus.FieldLogger) error {
	h := &helper{dir: dir, log: log}
	err := h.start(ctx, config)
	report(status, h, err)
	if err != nil {
		if uerr := h.stop(); uerr != nil {
			err = fmt.Errorf("%w; cleaning up: %w", err, uerr)
		}
		h.log.WithError(err).Error("attach failed")
		return err
	}
	h.log.WithFields(logrus.Fields{"device": h.device, "dio": h.loop.DIO, "pid": os.Getpid()}).Info("export attached")
	return h.serve(ctx)
}

func report(status io.WriteCloser, h *helper, err error) {
	r := startReport{Device: h.device}
	if err != nil {
		r = startReport{Error: err.Error()}
	} else {
		r.DIO = h.loop.DIO
	}
	b, _ := json.Marshal(r)
	_, _ = status.Write(append(b, '\n'))
	status.Close()
}

// start makes the device, in order: control socket, backing, FUSE mount,
// loop device. stop undoes whatever part of it was done.
func (h *helper) start(ctx context.Context, config io.Reader) error {
	cfg, err := readConfig(config)
	if err != nil {
		return err
	}
	h.cfg, h.log = cfg, h.log.WithField("volume", cfg.Volume)
	harden(h.log)
	// Relative paths from here on: the control socket's full path may be
	// longer than a socket address allows.
	if err := os.Chdir(h.dir); err != nil {
		return err
	}
	if h.ctl, err = net.Listen("unix", ctlName); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if err := os.WriteFile(pidName, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return err
	}
	b, err := h.openBacking(ctx)
	if err != nil {
		return err
	}
	if err := h.mount(b); err != nil {
		return err
	}
	return h.attach(b.Size())
}

func readConfig(r io.Reader) (HelperConfig, error) {
	var c HelperConfig
	if err := json.NewDecoder(io.LimitReader(r, maxConfig)).Decode(&c); err != nil {
		return c, fmt.Errorf("reading the configuration on stdin: %w", err)
	}
	switch {
	case c.Image != "" && (c.Addr != "" || c.Export != ""):
		return c, errors.New("the configuration names an image and an NBD export: one or the other")
	case c.Image == "" && (c.Addr == "" || c.Export == ""):
		return c, errors.New("the configuration needs an NBD address and export name, or an image")
	}
	return c, nil
}

// harden keeps the kernel from deadlocking on this process: it sits in the
// I/O path of the file system on its device, so memory reclaim must not
// wait for writeback from its allocations (PR_SET_IO_FLUSHER, which the
// kernel keeps per thread: best effort in a Go program), and the OOM killer
// should pick others (killing it fails every I/O of that file system).
func harden(log logrus.FieldLogger) {
	if err := unix.Prctl(unix.PR_SET_IO_FLUSHER, 1, 0, 0, 0); err != nil {
		log.WithError(err).Debug("PR_SET_IO_FLUSHER refused")
	}
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0); err != nil {
		log.WithError(err).Debug("oom_score_adj refused")
	}
}

func (h *helper) openBacking(ctx context.Context) (Backing, error) {
	if h.cfg.Image != "" {
		img, err := qcow2.Open(h.cfg.Image, nil)
		if err != nil {
			return nil, err
		}
		h.image = img
		return ImageBacking{Image: img}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	s, err := NewSession(ctx, Dialer(h.cfg.Addr, h.cfg.Export), SessionConfig{ReconnectTimeout: h.cfg.ReconnectTimeout,
		RequestTimeout: h.cfg.RequestTimeout, ReplayLimit: h.cfg.ReplayLimit, Connections: h.cfg.Connections, Log: h.log})
	if err != nil {
		return nil, err
	}
	h.session = s
	return s, nil
}

func (h *helper) mount(b Backing) error {
	mnt := filepath.Join(h.dir, fuseName)
	if err := os.Mkdir(mnt, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	srv, disk, err := mountDisk(mnt, b)
	if err != nil {
		return err
	}
	h.fuse, h.disk, h.fuseDone = srv, disk, make(chan struct{})
	go func() { srv.Wait(); close(h.fuseDone) }()
	return nil
}

// attach puts the loop device on the FUSE file, opened O_DIRECT so the
// loop driver does direct, asynchronous I/O (no second page cache, many
// requests in flight); a file system refusing O_DIRECT gets buffered I/O.
func (h *helper) attach(size int64) error {
	path := filepath.Join(h.dir, fuseName, DiskName)
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EINVAL) {
		f, err = os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return err
	}
	defer f.Close() // the loop driver holds its own reference
	bs := uint32(4096)
	if size%4096 != 0 {
		bs = 512
	}
	if h.loop, err = attachLoop(f, bs); err != nil {
		return err
	}
	h.device = h.loop.Path
	return os.WriteFile(deviceName, []byte(h.device+"\n"), 0o600)
}

// serve answers the control socket and signals until stopped. A signal
// stops the helper only while nothing uses the device: one sent to every
// process (a shutdown) must not fail a mounted file system that is about
// to be unmounted and flushed through it.
func (h *helper) serve(ctx context.Context) error {
	stops, grows := make(chan stopReq), make(chan growReq)
	go serveCtl(h.ctl, h.status, stops, grows)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	signal.Ignore(unix.SIGHUP, unix.SIGPIPE)
	defer signal.Stop(sigs)
	for {
		var err error
		select {
		case r := <-grows:
			r.reply <- h.growReply(ctx)
			continue
		case r := <-stops:
			err = h.stop()
			r.reply <- replyOf(h, err)
			select { // the process is about to end: let the reply out first
			case <-r.sent:
			case <-time.After(replyWriteLimit):
			}
		case sig := <-sigs:
			if users := deviceUsers(h.device); users != "" {
				h.log.WithFields(logrus.Fields{"signal": sig, "users": users}).Warn("not stopping on a signal: the device is in use")
				continue
			}
			err = h.stop()
		case <-ctx.Done():
			err = h.stop()
		case <-h.fuseDone:
			h.fuse = nil
			h.log.Error("the FUSE file system went away (unmounted from outside?): the device fails from now on")
			err = errors.Join(errors.New("FUSE file system unmounted from outside"), h.stop())
		}
		h.log.WithError(err).Info("attachment ended")
		return err
	}
}

// grow gives the device the export's new size: the session asks the
// server for it, the kernel is told that the FUSE file's size is stale
// and asks again (a stat), and the loop device takes the file's new size
// (LOOP_SET_CAPACITY), which the kernel announces to the file system's
// block device. It returns the device's size.
func (h *helper) grow(ctx context.Context) (int64, error) {
	if h.session == nil || h.loop == nil || h.disk == nil {
		return 0, errors.New("this attachment serves no NBD export, or is being stopped")
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	size, err := h.session.Refresh(ctx)
	if err != nil {
		return 0, err
	}
	if err := h.disk.sizeChanged(); err != nil {
		return 0, err
	}
	st, err := os.Stat(filepath.Join(h.dir, fuseName, DiskName))
	if err != nil {
		return 0, err
	}
	if st.Size() != size {
		return 0, fmt.Errorf("the FUSE file has %d bytes after the export grew to %d", st.Size(), size)
	}
	n, err := h.loop.setCapacity()
	if err == nil {
		h.log.WithFields(logrus.Fields{"device": h.device, "size": n}).Info("device grown")
	}
	return n, err
}

func (h *helper) growReply(ctx context.Context) Reply {
	n, err := h.grow(ctx)
	r := replyOf(h, err)
	r.Size = n
	return r
}

func (h *helper) status() Reply {
	r := Reply{OK: true, Volume: h.cfg.Volume, Device: h.device, PID: os.Getpid()}
	if h.loop != nil {
		r.DIO = h.loop.DIO
	}
	if h.session != nil {
		st := h.session.Status()
		r.Session = &st
	}
	return r
}

func replyOf(h *helper, err error) Reply {
	r := h.status()
	if err != nil {
		r.OK, r.Error = false, err.Error()
	}
	return r
}

// stop takes the attachment apart, last step first, and reports what
// failed. A device still in use (the plugin fencing a volume whose lease
// it lost) is released all the same: its I/O fails from then on, as the
// kernel's NBD disconnect would make it, and the loop driver lets go of it
// (autoclear) once its file system is unmounted.
func (h *helper) stop() error {
	forced := ""
	if h.device != "" {
		forced = deviceUsers(h.device)
	}
	var errs []error
	if h.loop != nil {
		errs = append(errs, h.loop.detach())
		h.loop = nil
	}
	if forced == "" && h.device != "" && !waitUnbound(h.device, unbindTimeout) {
		forced = "still bound after " + unbindTimeout.String()
	}
	if forced != "" {
		h.log.WithFields(logrus.Fields{"device": h.device, "users": forced}).Warn("releasing a device still in use: its I/O fails from now on")
		errs = append(errs, h.release())
	} else {
		errs = append(errs, h.unmountFUSE(), h.closeBacking())
	}
	errs = append(errs, h.removeFiles())
	return errors.Join(errs...)
}

// release ends the attachment under a device still in use: the session
// fails what comes, the FUSE mount leaves the namespace at once (the loop
// driver still holds its file) and the kernel fails every request once this
// process ends and closes /dev/fuse.
func (h *helper) release() error {
	if h.session != nil {
		h.session.Abort()
		h.session = nil
	}
	if h.image != nil {
		_ = h.image.Close()
		h.image = nil
	}
	h.fuse = nil
	err := unix.Unmount(filepath.Join(h.dir, fuseName), unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmounting the FUSE file system: %w", err)
	}
	return nil
}

// unmountFUSE unmounts, retrying while the kernel still releases the file
// the loop device held.
func (h *helper) unmountFUSE() error {
	if h.fuse == nil {
		return nil
	}
	srv := h.fuse
	h.fuse = nil
	var err error
	for end := time.Now().Add(unmountTimeout); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err = srv.Unmount(); err == nil || !errors.Is(err, unix.EBUSY) {
			return err
		}
	}
	return fmt.Errorf("unmounting the FUSE file system: %w", err)
}

// closeBacking makes the last flush and disconnects.
func (h *helper) closeBacking() error {
	switch {
	case h.session != nil:
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		err := h.session.Close(ctx)
		h.session = nil
		return err
	case h.image != nil:
		err := h.image.Close()
		h.image = nil
		return err
	}
	return nil
}

// removeFiles removes the helper's directory (never recursively: a mount
// could still be below it); closing the listener removes the socket.
func (h *helper) removeFiles() error {
	if h.ctl != nil {
		h.ctl.Close()
	}
	var errs []error
	for _, name := range []string{deviceName, pidName, fuseName} {
		if err := os.Remove(filepath.Join(h.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(h.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
