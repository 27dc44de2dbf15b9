// Command attachbench measures the userspace attach of block volumes: ext4
// on a loop device over the FUSE file the attach helper serves from a
// storage daemon over NBD, beside the same chain over a local qcow2 image
// the helper opens itself (no NBD hop, no daemon). Both run in turns, in
// one run; it prints medians and ratios. Run it as root through
// bench/userspace-attach.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/blockvol/fuseattach"
	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/qcow2"
)

type config struct {
	netvol   string
	work     string
	volSize  int64
	fileMiB  int
	runs     int
	qd       int
	randOps  int
	fsyncOps int
	conns    int
}

func main() {
	var c config
	flag.StringVar(&c.netvol, "netvol", "bin/netvol", "the netvol binary")
	flag.StringVar(&c.work, "work", "", "work directory on the disk to measure (default: a new one in /var/tmp)")
	flag.Int64Var(&c.volSize, "volume-size", 2<<30, "volume size in bytes")
	flag.IntVar(&c.fileMiB, "file-mib", 256, "size of the test file in MiB")
	flag.IntVar(&c.runs, "runs", 5, "runs of every test on every target")
	flag.IntVar(&c.qd, "qd", 16, "requests in flight for random I/O")
	flag.IntVar(&c.randOps, "rand-ops", 8192, "4 KiB operations per random I/O run")
	flag.IntVar(&c.fsyncOps, "fsync-ops", 300, "4 KiB write+fdatasync pairs per run")
	flag.IntVar(&c.conns, "connections", 0, "NBD connections of the attach helper (0: its default)")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "attachbench:", err)
		os.Exit(1)
	}
}

// target is one mounted ext4 under test; detach releases its device.
type target struct {
	name   string
	device string
	mnt    string
	detach func() error
}

func run(c config) error {
	if c.work == "" {
		dir, err := os.MkdirTemp("/var/tmp", "netvol-attachbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		c.work = dir
	} else if err := os.MkdirAll(c.work, 0o700); err != nil {
		return err
	}
	srv, err := startServer(c)
	if err != nil {
		return err
	}
	defer srv.stop()
	targets, err := attachAll(c, srv)
	defer release(targets)
	if err != nil {
		return err
	}
	results := measure(c, targets)
	printTable(c, targets, results)
	return nil
}

// attachAll makes the targets: the volume attached in userspace over NBD,
// the reference image attached by the same helper, and, when nbdfuse is
// installed, a second volume through libnbd's nbdfuse and a loop device.
func attachAll(c config, srv *server) ([]target, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := &fuseattach.Attacher{Dir: filepath.Join(c.work, "attach"), Command: []string{c.netvol, "attach-helper"},
		Session: fuseattach.SessionConfig{Connections: c.conns}}
	makers := []struct {
		name string
		make func() (string, func() error, error)
	}{
		{"nbd", func() (string, func() error, error) { return attachNBD(ctx, a, srv, c.volSize) }},
		{"local-qcow2", func() (string, func() error, error) { return attachImage(ctx, a, c) }},
	}
	if _, err := exec.LookPath("nbdfuse"); err == nil {
		makers = append(makers, struct {
			name string
			make func() (string, func() error, error)
		}{"nbdfuse", func() (string, func() error, error) { return attachNBDFuse(ctx, srv, c) }})
	}
	var targets []target
	for _, m := range makers {
		dev, detach, err := m.make()
		if err != nil {
			return targets, fmt.Errorf("%s: %w", m.name, err)
		}
		t := target{name: m.name, device: dev, mnt: filepath.Join(c.work, "mnt-"+m.name), detach: detach}
		targets = append(targets, t)
		if err := mkfsMount(t); err != nil {
			return targets, fmt.Errorf("%s: %w", m.name, err)
		}
	}
	return targets, nil
}

func attachNBD(ctx context.Context, a *fuseattach.Attacher, srv *server, size int64) (string, func() error, error) {
	export, err := srv.volume(ctx, "bench", size)
	if err != nil {
		return "", nil, err
	}
	d, err := a.Attach(ctx, blockvol.Target{Volume: "bench", Addr: srv.nbdAddr, Export: export})
	return d.Path, func() error { return a.Detach(context.Background(), d) }, err
}

func attachImage(ctx context.Context, a *fuseattach.Attacher, c config) (string, func() error, error) {
	ref := filepath.Join(c.work, "reference.qcow2")
	img, err := qcow2.Create(ref, c.volSize, nil) // the daemon's defaults
	if err == nil {
		err = img.Close()
	}
	if err != nil {
		return "", nil, err
	}
	d, err := a.AttachImage(ctx, ref)
	return d.Path, func() error { return a.Detach(context.Background(), d) }, err
}

// release unmounts and detaches every target.
func release(targets []target) {
	for _, t := range targets {
		_ = mount.System{}.Unmount(t.mnt)
		if err := t.detach(); err != nil {
			fmt.Fprintf(os.Stderr, "attachbench: releasing %s: %v\n", t.name, err)
		}
	}
}

// mkfsMount formats like the plugin but initialises inode tables and
// journal now, so no background zeroing runs during the measurements.
func mkfsMount(t target) error {
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard", t.device).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4: %w: %s", err, out)
	}
	if err := os.MkdirAll(t.mnt, 0o700); err != nil {
		return err
	}
	return mount.System{}.Mount(mount.Mount{Source: t.device, Target: t.mnt, Type: "ext4"})
}

// measure runs every test on every target in turns, runs times.
func measure(c config, targets []target) map[string]map[string][]float64 {
	res := map[string]map[string][]float64{}
	for r := range c.runs {
		for _, tc := range tests(c) {
			if res[tc.name] == nil {
				res[tc.name] = map[string][]float64{}
			}
			for _, t := range targets {
				v, err := tc.run(t.mnt)
				if err != nil {
					fmt.Fprintf(os.Stderr, "attachbench: %s on %s: %v\n", tc.name, t.name, err)
					continue
				}
				res[tc.name][t.name] = append(res[tc.name][t.name], v)
				fmt.Fprintf(os.Stderr, "run %d/%d %-28s %-12s %10.1f %s\n", r+1, c.runs, tc.name, t.name, v, tc.unit)
			}
		}
	}
	return res
}

func printTable(c config, targets []target, res map[string]map[string][]float64) {
	fmt.Printf("\nuserspace attach, ext4 inside: nbd = netvol's attach helper (FUSE file, loop device) over NBD from "+
		"netvol server on loopback; local-qcow2 = the same helper over a local qcow2 image (no NBD); nbdfuse = libnbd's "+
		"nbdfuse over the same server, losetup --direct-io; medians of %d runs, file %d MiB, O_DIRECT\n\n", c.runs, c.fileMiB)
	fmt.Printf("%-28s %-6s", "test", "unit")
	for _, t := range targets {
		fmt.Printf(" %12s", t.name)
	}
	for _, t := range targets[1:] {
		fmt.Printf(" %16s", "nbd/"+t.name)
	}
	fmt.Println()
	for _, tc := range tests(c) {
		fmt.Printf("%-28s %-6s", tc.name, tc.unit)
		for _, t := range targets {
			fmt.Printf(" %12.1f", median(res[tc.name][t.name]))
		}
		ours := median(res[tc.name][targets[0].name])
		for _, t := range targets[1:] {
			ratio := 0.0
			if m := median(res[tc.name][t.name]); m > 0 {
				ratio = ours / m
			}
			fmt.Printf(" %16.2f", ratio)
		}
		fmt.Println()
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
