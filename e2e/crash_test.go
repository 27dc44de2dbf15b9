//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/e2e/node"
)

// The rule these suites check (issue 12): a FLUSH, and so an fsync in a
// container, is never acknowledged unless every write acknowledged before
// it on that export is on stable storage of the storage node. A storage
// daemon that crashes, or a storage node that loses power, between a
// write's acknowledgement and the FLUSH that covers it must either keep
// the write or fail the FLUSH; it must never acknowledge the FLUSH over
// the lost write.
//
// Both suites run the same writer in a container on an nbd volume, twice:
// in a node, where the volume is attached through the kernel's NBD client,
// and on this host, whose kernel has none (the userspace attach, FUSE and a
// loop device). They crash the storage side inside the window: after a
// write was acknowledged and before the fsync that covers it. After
// recovery every record whose fsync returned must be in the file, read back
// through a fresh mount (the writer's page cache is gone with its mount).

// crashVol is the volume of the crash suites.
const crashVol = "crashvol"

// recordSize is the size of one record: a new 64 KiB qcow2 cluster each,
// so every record's write allocates (the image's metadata for it is
// written at flush time).
const recordSize = 64 << 10

// crashWriter is a detached container, name (two characters or more), with
// crashVol at /v and the host directory share at /share. Record after
// record it appends record(N) to /v/log with O_DIRECT, so the write reaches
// the storage daemon and is acknowledged with no flush; notes "wrote N" in
// /share/<name>; pauses a second (the window in which the suites crash the
// storage side); fsyncs the file and notes "ok N" once that returned, or
// "fail N" when a step failed. The notes live in the share, never on the
// volume under test. It stops when /share/stop-<name> exists.
func crashWriter(name, share string) string {
	loop := `head -c ` + itoa(recordSize) + ` /dev/zero | tr "\0" . > /tmp/pad; i=0
while [ ! -e /share/stop-` + name + ` ] && [ $i -lt 1000 ]; do
	i=$((i+1))
	{ printf "rec-%d " $i; cat /tmp/pad; } | head -c ` + itoa(recordSize-1) + ` > /tmp/rec; echo >> /tmp/rec
	if dd if=/tmp/rec of=/v/log bs=` + itoa(recordSize) + ` count=1 oflag=direct,append conv=notrunc 2>/dev/null; then
		echo wrote $i >> /share/` + name + `; sleep 1
		if sync /v/log; then echo ok $i; else echo fail $i; sleep 1; fi >> /share/` + name + `
	else
		echo fail $i >> /share/` + name + `; sleep 1
	fi
done`
	return "docker run -d --name " + name + " --network none -v " + crashVol + ":/v -v " + share + ":/share " +
		node.BusyboxImage + " sh -c '" + loop + "' >/dev/null"
}

// record is the N-th record as crashWriter writes it: "rec-N ", dots, a
// newline; recordSize bytes.
func record(n int) []byte {
	b := bytes.Repeat([]byte{'.'}, recordSize)
	copy(b, fmt.Sprintf("rec-%d ", n))
	b[recordSize-1] = '\n'
	return b
}

// writerLog is what a crashWriter noted so far.
type writerLog struct {
	wrote, ok, fail []int
	last            string // the last complete line
}

func readWriterLog(t *testing.T, file string) writerLog {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var w writerLog
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		verb, num, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.Atoi(num)
		if !ok || err != nil {
			continue // a line being written
		}
		switch verb {
		case "wrote":
			w.wrote = append(w.wrote, n)
		case "ok":
			w.ok = append(w.ok, n)
		case "fail":
			w.fail = append(w.fail, n)
		}
		w.last = sc.Text()
	}
	return w
}

// waitWriter polls the writer's notes every 20 ms until cond holds, for
// at most timeout.
func waitWriter(t *testing.T, file, what string, timeout time.Duration, cond func(writerLog) bool) writerLog {
	t.Helper()
	end := time.Now().Add(timeout)
	for {
		w := readWriterLog(t, file)
		if cond(w) {
			return w
		}
		if time.Now().After(end) {
			b, _ := os.ReadFile(file)
			t.Fatalf("%s: no %s within %s; the writer noted:\n%s", file, what, timeout, lastLines(string(b), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inWindow waits until the writer has just had a record acknowledged and
// is pausing before its fsync, and returns the record's number.
func inWindow(t *testing.T, file string) int {
	t.Helper()
	w := waitWriter(t, file, "acknowledged write awaiting its fsync", 2*time.Minute, func(w writerLog) bool {
		return strings.HasPrefix(w.last, "wrote ")
	})
	return w.wrote[len(w.wrote)-1]
}

// settled waits until the writer has noted the outcome of record n's
// fsync, and reports whether it failed.
func settled(t *testing.T, file string, n int, timeout time.Duration) (failed bool) {
	t.Helper()
	w := waitWriter(t, file, fmt.Sprintf("outcome for record %d", n), timeout, func(w writerLog) bool {
		return slices.Contains(w.ok, n) || slices.Contains(w.fail, n)
	})
	return slices.Contains(w.fail, n)
}

// dockerHost is where the writer runs: dockerd and the plugin in a node,
// or on this host.
type dockerHost struct {
	// try runs a shell script whose docker talks to this dockerd and
	// returns its stdout, and an error with its output unless it exits 0.
	try func(t *testing.T, script string) (string, error)
	// share is a host directory, shareInside the same directory where
	// sh's docker runs (for -v).
	share, shareInside string
	mountRoot          string // the plugin's mount root
}

// sh is try, failing the test on an error.
func (h *dockerHost) sh(t *testing.T, script string) string {
	t.Helper()
	out, err := h.try(t, script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// nodeDocker is dockerd in n, plugin started.
func nodeDocker(n *node.Node) *dockerHost {
	return &dockerHost{
		try: func(t *testing.T, script string) (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), node.DefaultRunTimeout)
			defer cancel()
			res, err := n.Run(ctx, script)
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != 0 {
				return res.Stdout, fmt.Errorf("node %s: %q exited %d\nstdout:\n%s\nstderr:\n%s", n.Name(), script, res.ExitCode, res.Stdout, res.Stderr)
			}
			return res.Stdout, nil
		},
		share: n.HostShare(), shareInside: node.GuestShare, mountRoot: node.GuestStateDir + "/mounts",
	}
}

// hostDocker is a dockerd on this host, with a host plugin whose state
// directory is state.
func hostDocker(t *testing.T, d *node.HostDocker, state string) *dockerHost {
	share := t.TempDir()
	return &dockerHost{
		try: func(t *testing.T, script string) (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), node.DefaultRunTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, "sh", "-c", script)
			cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.Socket)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				return string(out), fmt.Errorf("%q: %v\nstdout:\n%s\nstderr:\n%s", script, err, out, stderr.Bytes())
			}
			return string(out), nil
		},
		share: share, shareInside: share, mountRoot: state + "/mounts",
	}
}

// crashRun is one run of the writer against a crash.
type crashRun struct {
	h       *dockerHost
	acks    string // the writer's notes, on the host
	w       writerLog
	crashed []int // the records in whose window the storage side crashed
	eio     bool  // an fsync failed
}

// startWriter starts crashWriter on h; crashVol must exist.
func startWriter(t *testing.T, h *dockerHost) *crashRun {
	t.Helper()
	h.sh(t, crashWriter("writer", h.shareInside))
	return &crashRun{h: h, acks: filepath.Join(h.share, "writer")}
}

// crashes lets the writer fsync three records, then calls crash while it
// is in a window, up to rounds times; crash brings the storage side back
// and returns a description for the log. It stops early when the
// window's fsync fails (EIO): the writer's file system has then aborted.
func (r *crashRun) crashes(t *testing.T, rounds int, crash func() string) {
	t.Helper()
	for round := range rounds {
		okBefore := len(readWriterLog(t, r.acks).ok)
		waitWriter(t, r.acks, "three more fsynced records", 2*time.Minute, func(w writerLog) bool { return len(w.ok) >= okBefore+3 })
		rec := inWindow(t, r.acks)
		how := crash()
		r.crashed = append(r.crashed, rec)
		var failed bool
		took := timed(func() { failed = settled(t, r.acks, rec, 3*time.Minute) })
		t.Logf("round %d: %s with record %d acknowledged and not yet flushed; its fsync %s %s after the restart",
			round+1, how, rec, map[bool]string{false: "returned", true: "failed"}[failed], took)
		if failed {
			r.eio = true
			return
		}
	}
	waitWriter(t, r.acks, "two more fsynced records", 2*time.Minute, func(w writerLog) bool {
		return len(w.ok) > 0 && w.ok[len(w.ok)-1] >= r.crashed[len(r.crashed)-1]+2
	})
}

// finish ends the writer container and removes it, which unmounts the
// volume (its last user) and drops the page cache of it; then copies
// /v/log out of a fresh mount (which replays the ext4 journal) and checks
// every fsynced record is in it.
func (r *crashRun) finish(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(r.h.share, "stop-writer"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.h.sh(t, "timeout 120 docker wait writer >/dev/null; docker rm -f writer >/dev/null")
	mnt := r.h.mountRoot + "/" + crashVol
	if got := r.h.sh(t, "grep -c ' "+mnt+" ' /proc/mounts || true"); got != "0\n" {
		t.Fatalf("%s still mounted %q times after its writer was removed", mnt, got)
	}
	r.w = readWriterLog(t, r.acks)
	r.eio = r.eio || len(r.w.fail) > 0
	t.Logf("the writer saw EIO: %v", r.eio)
	// After a file system that aborted (EIO), the plugin's mount waits
	// for the kernel's multi-mount protection check, longer than Docker's
	// deadline for Mount: the plugin answers "retry", and the mount goes
	// on meanwhile.
	readBack := "docker run --rm --network none -v " + crashVol + ":/v -v " + r.h.shareInside + ":/share " +
		node.BusyboxImage + " cp /v/log /share/log.after"
	for end := time.Now().Add(3 * time.Minute); ; time.Sleep(5 * time.Second) {
		_, err := r.h.try(t, readBack)
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "retry") || time.Now().After(end) {
			t.Fatal(err)
		}
		t.Logf("reading back: the mount asks to retry: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(r.h.share, "log.after"))
	if err != nil {
		t.Fatal(err)
	}
	checkFsynced(t, r.w, b, r.crashed)
}

// checkFsynced fails the test unless every record the writer noted "ok"
// is intact in log. crashed are the records in whose window the storage
// side crashed, for the message.
func checkFsynced(t *testing.T, w writerLog, log []byte, crashed []int) {
	t.Helper()
	intact, seen := map[int]bool{}, map[int]bool{}
	for off := 0; ; {
		i := bytes.Index(log[off:], []byte("rec-"))
		if i < 0 {
			break
		}
		start := off + i
		off = start + 4
		j := off
		for j < len(log) && log[j] >= '0' && log[j] <= '9' {
			j++
		}
		if n, err := strconv.Atoi(string(log[off:j])); err == nil {
			seen[n] = true
			intact[n] = intact[n] || bytes.HasPrefix(log[start:], record(n))
		}
	}
	var missing []string
	for _, n := range w.ok {
		if !intact[n] {
			note := " absent"
			if seen[n] {
				note = " damaged"
			}
			if slices.Contains(crashed, n) {
				note += " (acknowledged before the crash, fsynced after it)"
			}
			missing = append(missing, fmt.Sprintf("%d%s", n, note))
		}
	}
	t.Logf("writer: %d records fsynced, %d failed %v; file %d bytes, %d records in it; crashes in the windows of %v",
		len(w.ok), len(w.fail), w.fail, len(log), len(seen), crashed)
	if len(missing) > 0 {
		t.Errorf("records whose fsync returned are missing or damaged after recovery: %s\n"+
			"(a FLUSH was acknowledged over writes the storage side had lost)", strings.Join(missing, ", "))
	}
}

// TestDaemonCrashKeepsFsyncedWrites: the storage daemon on this
// host is SIGKILLed three times, each time after a write to a newly
// allocated cluster was acknowledged and before the FLUSH covering it, and
// started again on the same data and ports; the plugin hands the kernel
// client new connections (the userspace attach reconnects by itself) and
// the writer carries on. Every record whose fsync returned must be in the
// file, read back through a fresh mount; the image must check clean
// (qemu-img check, e2fsck -fn of its raw copy).
func TestDaemonCrashKeepsFsyncedWrites(t *testing.T) {
	t.Parallel()
	node.RequireTools(t, "mkfs.ext4", "qemu-img", "e2fsck")
	t.Run("Kernel", func(t *testing.T) {
		srv := node.StartNetvolServer(t)
		bin := node.NetvolBinary(t)
		n := node.Start(t, node.Options{Name: "c1", MemoryMiB: 1536})
		n.StartDocker(t)
		n.StartPlugin(t, bin, srv.PluginArgs())
		defer func() {
			if t.Failed() {
				t.Logf("plugin log and kernel messages:\n%s", tail(n, "tail -n 40 "+node.PluginLog+"; dmesg | tail -n 30"))
				t.Logf("server log:\n%s", srv.LogTail(40))
			}
		}()
		daemonCrashes(t, srv, nodeDocker(n))
	})
	t.Run("Userspace", func(t *testing.T) {
		node.LockPluginSocket(t)
		requireUserspaceAttach(t)
		docker := node.StartHostDocker(t)
		docker.ImportBusybox(t)
		srv := node.StartNetvolServer(t)
		state := t.TempDir()
		cleanupAttachments(t, state)
		plugin := startHostPlugin(t, state, "crash-host", "--server", srv.URL(""), "--token-file", srv.TokenFile, "--attach", "userspace")
		defer func() {
			if t.Failed() {
				t.Logf("plugin log:\n%s\nattach helpers:\n%s", plugin.LogTail(40), lastLines(helperLogs(t, state), 40))
				t.Logf("server log:\n%s", srv.LogTail(40))
			}
		}()
		daemonCrashes(t, srv, hostDocker(t, docker, state))
	})
}

func daemonCrashes(t *testing.T, srv *node.NetvolServer, h *dockerHost) {
	h.sh(t, "docker volume create -d netvol -o type=nbd -o size=128M "+crashVol+" >/dev/null")
	start := time.Now()
	r := startWriter(t, h)
	r.crashes(t, 3, func() string {
		srv.Kill()
		srv.Restart(t)
		return "daemon killed"
	})
	r.finish(t)
	t.Logf("writer ran %s", time.Since(start).Round(100*time.Millisecond))

	srv.Stop() // the image closed, as a check wants it
	img := filepath.Join(srv.DataDir, "volumes", crashVol+".qcow2")
	if out, err := exec.Command("qemu-img", "check", img).CombinedOutput(); err != nil {
		t.Errorf("qemu-img check: %v\n%s", err, out)
	}
	raw := filepath.Join(t.TempDir(), "v.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", img, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	if out, err := exec.Command("e2fsck", "-fn", raw).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
}

// TestPowerLossKeepsFsyncedWrites: the storage daemon runs in a
// node of its own ("st"), its images on the node's state disk, reached
// through st's forwarded ports by the Docker host: a second node ("dh":
// kernel NBD, plugin, dockerd) or this host (userspace attach). st loses
// power (Node.Crash: its page cache is gone) after a write was
// acknowledged and before the fsync covering it, boots again and the
// daemon starts on the same data. Either the writer's fsyncs carry on with
// every record they acknowledged kept, or they fail (EIO, the file system
// aborts); never does an fsync return over a lost write. The single
// assertion: every record noted fsynced is intact after recovery, read
// through a fresh mount; whether EIO was seen is logged. Then the image is
// checked in st (qemu-img check, e2fsck -fn of a raw copy).
func TestPowerLossKeepsFsyncedWrites(t *testing.T) {
	t.Parallel()
	node.RequireTools(t, "mkfs.ext4", "qemu-img", "e2fsck")
	bin := node.NetvolBinary(t)
	t.Run("Kernel", func(t *testing.T) {
		nbdPort, apiPort := node.FreePort(t), node.FreePort(t)
		nodes := node.StartAll(t,
			node.Options{Name: "st", HostForward: []int{nbdPort, apiPort}},
			node.Options{Name: "dh", MemoryMiB: 1536})
		st, dh := nodes[0], nodes[1]
		srv := node.StartGuestServer(t, st, bin, nbdPort, apiPort)
		dh.StartDocker(t)
		dh.StartPlugin(t, bin, srv.PluginArgs())
		defer func() {
			if t.Failed() {
				t.Logf("dh: plugin log and kernel messages:\n%s", tail(dh, "tail -n 40 "+node.PluginLog+"; dmesg | tail -n 30"))
				t.Logf("st: server log and kernel messages:\n%s", tail(st, "tail -n 40 "+node.GuestServerLog+" | tr -d '\\000'; dmesg | tail -n 20"))
			}
		}()
		powerLosses(t, srv, nodeDocker(dh))
	})
	t.Run("Userspace", func(t *testing.T) {
		node.LockPluginSocket(t)
		requireUserspaceAttach(t)
		nbdPort, apiPort := node.FreePort(t), node.FreePort(t)
		docker := node.StartHostDocker(t)
		docker.ImportBusybox(t)
		st := node.Start(t, node.Options{Name: "st", HostForward: []int{nbdPort, apiPort}})
		srv := node.StartGuestServer(t, st, bin, nbdPort, apiPort)
		state := t.TempDir()
		cleanupAttachments(t, state)
		plugin := startHostPlugin(t, state, "crash-host", "--server", fmt.Sprintf("127.0.0.1:%d", apiPort), "--token", srv.Token, "--attach", "userspace")
		defer func() {
			if t.Failed() {
				t.Logf("plugin log:\n%s\nattach helpers:\n%s", plugin.LogTail(40), lastLines(helperLogs(t, state), 40))
				t.Logf("st: server log and kernel messages:\n%s", tail(st, "tail -n 40 "+node.GuestServerLog+" | tr -d '\\000'; dmesg | tail -n 20"))
			}
		}()
		powerLosses(t, srv, hostDocker(t, docker, state))
	})
}

func powerLosses(t *testing.T, srv *node.GuestServer, h *dockerHost) {
	st := srv.Node
	h.sh(t, "docker volume create -d netvol -o type=nbd -o size=128M "+crashVol+" >/dev/null")
	h.sh(t, dockerRun(crashVol, "true")) // formatted, and unmounted again
	// What was set up so far (token, registry, the image and its file
	// system) is made durable: the suite is about the writes acknowledged
	// while the writer runs.
	st.MustRun(t, "sync")
	start := time.Now()
	r := startWriter(t, h)
	r.crashes(t, 2, func() string {
		st.Crash()
		crashAt := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := st.Boot(ctx); err != nil {
			t.Fatal(err)
		}
		srv.Start(t)
		return fmt.Sprintf("st lost power (the daemon was back %s later)", time.Since(crashAt).Round(100*time.Millisecond))
	})
	r.finish(t)
	t.Logf("writer ran %s", time.Since(start).Round(100*time.Millisecond))

	srv.Stop(t, false)
	img := srv.DataDir + "/volumes/" + crashVol + ".qcow2"
	if res := run(t, st, "qemu-img check "+img); res.ExitCode != 0 {
		t.Errorf("qemu-img check in st exited %d:\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	st.MustRun(t, "qemu-img convert -O raw "+img+" /tmp/v.raw")
	if res := run(t, st, "e2fsck -fn /tmp/v.raw"); res.ExitCode != 0 {
		t.Errorf("e2fsck -fn in st exited %d:\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
}

// run runs script in n within node.DefaultRunTimeout; unlike MustRun, a
// non-zero exit is the caller's to judge.
func run(t *testing.T, n *node.Node, script string) node.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), node.DefaultRunTimeout)
	defer cancel()
	res, err := n.Run(ctx, script)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func lastLines(s string, n int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return strings.Join(all, "\n")
}
