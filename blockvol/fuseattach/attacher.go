package fuseattach

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/volume/backend"
)

// MethodUserspace is the Device.Method of Attacher.
const MethodUserspace = "userspace"

// HelperArgv0 is the helper's argv[0]. The leading '@' marks it, for
// systemd's shutdown, as a storage daemon to spare until the file systems
// on its device are unmounted (https://systemd.io/ROOT_STORAGE_DAEMONS/).
const HelperArgv0 = "@netvol-attach-helper"

const (
	statusTimeout = 5 * time.Second // a live helper answers at once
	exitWait      = 10 * time.Second
	logTailBytes  = 2048
)

// Attacher attaches exports in userspace, for kernels without the NBD
// driver: a helper process per attachment serves the export over NBD as a
// one-file FUSE file system and puts a loop device on that file. The helper
// runs in a session of its own, so the attachment outlives the plugin; a
// new plugin finds it again under Dir (Adopt) and Detach stops it, also one
// an earlier run started.
type Attacher struct {
	// Dir holds a directory per attachment (see control.go): the plugin's
	// <state-dir>/attach. Required, absolute.
	Dir string
	// Command runs a helper: the netvol binary and its hidden subcommand
	// (Dir and the log level are appended as flags). Required.
	Command []string
	// Session tunes the helpers' NBD sessions (its Log is not used).
	Session SessionConfig
	// LogLevel is the helpers' log level ("" is info).
	LogLevel string
	Log      logrus.FieldLogger
}

var _ blockvol.Attacher = (*Attacher)(nil)

// Attach starts a helper for t (its address and export name: the helper
// dials by itself, also again after a lost connection) and waits for its
// device.
func (a *Attacher) Attach(ctx context.Context, t blockvol.Target) (blockvol.Device, error) {
	return a.attach(ctx, HelperConfig{Volume: t.Volume, Addr: t.Addr, Export: t.Export,
		ReconnectTimeout: a.Session.ReconnectTimeout, RequestTimeout: a.Session.RequestTimeout,
		ReplayLimit: a.Session.ReplayLimit, Connections: a.Session.Connections})
}

// AttachImage serves a local qcow2 image through the same chain (helper,
// FUSE file, loop device), without NBD: the benchmark's reference.
func (a *Attacher) AttachImage(ctx context.Context, image string) (blockvol.Device, error) {
	return a.attach(ctx, HelperConfig{Volume: filepath.Base(image), Image: image})
}

func (a *Attacher) attach(ctx context.Context, cfg HelperConfig) (blockvol.Device, error) {
	dir, err := a.newDir()
	if err != nil {
		return blockvol.Device{}, err
	}
	p, err := a.start(dir, cfg)
	if err != nil {
		a.removeDir(dir)
		return blockvol.Device{}, err
	}
	r, err := p.ready(ctx)
	if err != nil {
		tail := logTail(dir + ".log")
		a.abandon(p, dir, ctx.Err() == nil)
		return blockvol.Device{}, fmt.Errorf("userspace attach: %w%s", err, tail)
	}
	a.log().WithFields(logrus.Fields{"volume": cfg.Volume, "device": r.Device, "dio": r.DIO, "pid": p.cmd.Process.Pid}).Info("userspace attach: device ready")
	return blockvol.Device{Path: r.Device, Method: MethodUserspace}, nil
}

func (a *Attacher) log() logrus.FieldLogger {
	if a.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		return l
	}
	return a.Log
}

// newDir makes a fresh attachment directory under Dir.
func (a *Attacher) newDir() (string, error) {
	if !filepath.IsAbs(a.Dir) || len(a.Command) == 0 {
		return "", fmt.Errorf("userspace attach: Dir must be absolute and Command set: %w", backend.ErrInvalid)
	}
	if err := os.MkdirAll(a.Dir, 0o700); err != nil {
		return "", err
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	dir := filepath.Join(a.Dir, hex.EncodeToString(b[:]))
	return dir, os.Mkdir(dir, 0o700)
}

// process is a helper just started.
type process struct {
	cmd    *exec.Cmd
	status *os.File // read end of the helper's fd 3
	exited chan struct{}
}

// start runs a helper for dir with cfg on its stdin, its output in
// <dir>.log and fd 3 for its start report. Its environment is empty but
// for PATH: the plugin's may hold its API token.
func (a *Attacher) start(dir string, cfg HelperConfig) (*process, error) {
	logf, err := os.OpenFile(dir+".log", os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer statusW.Close()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		statusR.Close()
		return nil, err
	}
	defer cfgR.Close()
	args := append(append([]string{}, a.Command[1:]...), "--dir", dir, "--log-level", orInfo(a.LogLevel))
	cmd := exec.Command(a.Command[0], args...)
	cmd.Args[0] = HelperArgv0
	cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = cfgR, logf, logf, []*os.File{statusW}
	cmd.Env, cmd.Dir = []string{"PATH=" + os.Getenv("PATH")}, "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		statusR.Close()
		cfgW.Close()
		return nil, fmt.Errorf("starting the attach helper: %w", err)
	}
	// The configuration is far smaller than a pipe's buffer: no deadlock.
	err = json.NewEncoder(cfgW).Encode(cfg)
	cfgW.Close()
	p := &process{cmd: cmd, status: statusR, exited: make(chan struct{})}
	// Reap it whenever it ends, while this plugin runs; init does after.
	go func() { _ = cmd.Wait(); close(p.exited) }()
	if err != nil {
		return p, fmt.Errorf("configuring the attach helper: %w", err)
	}
	return p, nil
}

func orInfo(level string) string {
	if level == "" {
		return "info"
	}
	return level
}

// ready waits for the helper's start report.
func (p *process) ready(ctx context.Context) (startReport, error) {
	type result struct {
		r   startReport
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var res result
		line, err := bufio.NewReader(io.LimitReader(p.status, maxReply)).ReadBytes('\n')
		if err != nil {
			res.err = errors.New("the attach helper ended without reporting")
		} else if err := json.Unmarshal(line, &res.r); err != nil {
			res.err = err
		} else if res.r.Error != "" {
			res.err = errors.New(res.r.Error)
		}
		ch <- res
	}()
	defer p.status.Close()
	select {
	case res := <-ch:
		return res.r, res.err
	case <-ctx.Done():
		return startReport{}, ctx.Err()
	}
}

// abandon ends a helper that failed to start (reported: it is cleaning up
// and exiting by itself) or was too slow (killed), and cleans up after it.
func (a *Attacher) abandon(p *process, dir string, reported bool) {
	if reported {
		select {
		case <-p.exited:
		case <-time.After(exitWait):
		}
	}
	select {
	case <-p.exited:
	default:
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
	if err := a.cleanupDead(dir); err != nil {
		a.log().WithError(err).Warn("userspace attach: cleaning up after a failed helper")
	}
}

// Detach implements blockvol.Attacher: it stops the helper that serves
// d, found by the file the loop device is bound to (or the device its
// directory records), so a device attached by an earlier run of the plugin
// is released too. A device still in use is released all the same and
// fails from then on. A device of no helper of ours is left alone.
func (a *Attacher) Detach(ctx context.Context, d blockvol.Device) error {
	if d.Method != MethodUserspace {
		return fmt.Errorf("device %s was attached by %q, not in userspace: %w", d.Path, d.Method, backend.ErrInvalid)
	}
	if _, ok := loopIndex(d.Path); !ok {
		return fmt.Errorf("device %q is not /dev/loopN: %w", d.Path, backend.ErrInvalid)
	}
	dir := a.dirOf(d.Path)
	if dir == "" {
		return nil
	}
	return a.stop(ctx, dir)
}

var _ blockvol.Grower = (*Attacher)(nil)

// Grow implements blockvol.Grower: the helper serving d asks the server
// for the export's size, grows its FUSE file and the loop device on it,
// and answers the device's size. It dials by itself: dial is not used.
func (a *Attacher) Grow(ctx context.Context, d blockvol.Device, _ blockvol.Dialer) (int64, error) {
	if d.Method != MethodUserspace {
		return 0, fmt.Errorf("device %s was attached by %q, not in userspace: %w", d.Path, d.Method, backend.ErrInvalid)
	}
	dir := a.dirOf(d.Path)
	if dir == "" {
		return 0, fmt.Errorf("device %s: no attach helper of this plugin serves it: %w", d.Path, backend.ErrNotFound)
	}
	r, err := call(ctx, dir, cmdGrow)
	if err != nil {
		return 0, err
	}
	if !r.OK {
		return r.Size, fmt.Errorf("attach helper of %s: %s", d.Path, r.Error)
	}
	return r.Size, nil
}

// stop asks the helper of dir to end; one that is gone is cleaned up
// after.
func (a *Attacher) stop(ctx context.Context, dir string) error {
	r, err := call(ctx, dir, cmdStop)
	switch {
	case errors.Is(err, errNoHelper):
		return a.cleanupDead(dir)
	case err != nil:
		return err
	case !r.OK:
		return fmt.Errorf("attach helper of %s: %s%s", r.Device, r.Error, logTail(dir+".log"))
	}
	a.waitGone(r.PID)
	a.removeDir(dir)
	return nil
}

// waitGone waits a little for a stopped helper to exit, so that what
// follows (a new attach, a test counting processes) does not see it.
func (a *Attacher) waitGone(pid int) {
	for end := time.Now().Add(exitWait); pid > 0 && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
	}
}

// dirOf finds the attachment directory of a loop device: the one holding
// the file it is bound to, or, for a device no longer bound, the one that
// recorded it.
func (a *Attacher) dirOf(device string) string {
	root := a.root()
	if b := loopBacking(device); b != "" {
		dir := filepath.Dir(filepath.Dir(b))
		if filepath.Base(b) == DiskName && filepath.Base(filepath.Dir(b)) == fuseName && filepath.Dir(dir) == root {
			return dir
		}
		return "" // someone else's device now
	}
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		if e.IsDir() && readTrim(filepath.Join(dir, deviceName)) == device {
			return dir
		}
	}
	return ""
}

// root is Dir with symlinks resolved, as the kernel reports paths.
func (a *Attacher) root() string {
	if r, err := filepath.EvalSymlinks(a.Dir); err == nil {
		return r
	}
	return filepath.Clean(a.Dir)
}

// Adopt takes over what earlier runs of the plugin left under Dir, before
// the plugin serves Docker: a helper whose device a file system uses is
// kept (Detach finds it again); a live helper whose device nothing uses
// (the plugin stopped between attaching and mounting) is stopped; a helper
// that died is cleaned up after (its FUSE mount, loop device and files),
// and what its volume's file system sees is I/O errors until remounted.
func (a *Attacher) Adopt(ctx context.Context) error {
	entries, err := os.ReadDir(a.root())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			errs = append(errs, a.adopt(ctx, filepath.Join(a.root(), e.Name())))
		}
	}
	return errors.Join(errs...)
}

func (a *Attacher) adopt(ctx context.Context, dir string) error {
	cctx, cancel := context.WithTimeout(ctx, statusTimeout)
	r, err := call(cctx, dir, cmdStatus)
	cancel()
	log := a.log().WithField("dir", dir)
	switch {
	case err == nil && r.Device != "" && deviceUsers(r.Device) != "":
		log.WithFields(logrus.Fields{"volume": r.Volume, "device": r.Device, "pid": r.PID, "session": sessionState(r)}).
			Info("userspace attach: attachment of an earlier run adopted")
		return nil
	case err == nil:
		log.WithFields(logrus.Fields{"volume": r.Volume, "device": r.Device}).Warn("userspace attach: stopping an attachment no file system uses")
		return a.stop(ctx, dir)
	case !errors.Is(err, errNoHelper):
		log.WithError(err).Warn("userspace attach: a helper does not answer; killing it")
		a.kill(dir)
	}
	log.WithField("log", logTail(dir+".log")).Warn("userspace attach: cleaning up after a helper that ended")
	return a.cleanupDead(dir)
}

func sessionState(r Reply) string {
	if r.Session == nil {
		return ""
	}
	return r.Session.State
}

// kill ends a hung helper of dir: the pid it recorded, if that process is
// still a helper of dir.
func (a *Attacher) kill(dir string) {
	pid, err := strconv.Atoi(readTrim(filepath.Join(dir, pidName)))
	if err != nil || pid <= 0 {
		return
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !strings.Contains(string(cmdline), "\x00"+dir+"\x00") {
		return // gone, or the pid was reused
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	a.waitGone(pid)
}

// cleanupDead undoes what a helper that ended left: its loop device (which
// autoclears once no file system holds it), its FUSE mount (detached
// lazily: the loop device may still hold the file) and its files.
func (a *Attacher) cleanupDead(dir string) error {
	var errs []error
	if dev := readTrim(filepath.Join(dir, deviceName)); dev != "" &&
		loopBacking(dev) == filepath.Join(dir, fuseName, DiskName) {
		errs = append(errs, clearLoop(dev))
	}
	err := unix.Unmount(filepath.Join(dir, fuseName), unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmounting %s: %w", filepath.Join(dir, fuseName), err))
	}
	for _, name := range []string{ctlName, pidName, deviceName, fuseName} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleaning up the attachment in %s: %w", dir, err)
	}
	a.removeDir(dir)
	return nil
}

// removeDir removes an attachment's (empty) directory and its log.
func (a *Attacher) removeDir(dir string) {
	_ = os.Remove(dir)
	_ = os.Remove(dir + ".log")
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// logTail is the end of a helper's log, for an error message.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > logTailBytes {
		_, _ = f.Seek(-logTailBytes, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	if s := strings.TrimSpace(string(b)); s != "" {
		return "\nhelper log:\n" + s
	}
	return ""
}
