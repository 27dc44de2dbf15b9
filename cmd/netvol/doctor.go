package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/netvol/netvol/internal/opcmd"
	"github.com/netvol/netvol/nbd"
)

// Statuses of a check.
const (
	statusOK   = "OK"
	statusWarn = "WARN"
	statusFail = "FAIL"
)

// checkResult is one line of the doctor's report; Fix says what to do
// when Status is not OK.
type checkResult struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

func passed(check, detail string) checkResult {
	return checkResult{Check: check, Status: statusOK, Detail: detail}
}

func problem(status, check, detail, fix string) checkResult {
	return checkResult{Check: check, Status: status, Detail: detail, Fix: fix}
}

// doctorEnv is what the checks look at besides the flags, so that tests
// can run them without root and against fakes.
type doctorEnv struct {
	root      string           // prefix of /proc, /sys, /dev and /lib/modules; "" is the host's
	kernelNBD func() error     // nil when the kernel's NBD driver is there: nbd.KernelAvailable
	now       func() time.Time // the local clock
	timeout   time.Duration    // bounds each check
}

// doctor runs the checks of one netvol doctor.
type doctor struct {
	f          pluginFlags
	dockerHost string
	env        doctorEnv
}

func newDoctorCommand() *cobra.Command {
	d := &doctor{env: doctorEnv{kernelNBD: nbd.KernelAvailable, now: time.Now}}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this host and the servers it uses: kernel support, devices, servers, token, Docker, clocks",
		Long: `Check what netvol needs on this host and from its servers, and say what to do
about each problem: the kernel's NBD driver and /dev/nbd*, FUSE and loop
devices (the userspace attach), the kernel's NFS client, the storage daemon
(reachable, token accepted, NBD address, clock skew), the NFS export, the
Docker daemon and the plugin's socket.

Each line is OK, WARN or FAIL; the exit status is non-zero when a check FAILs.
A missing kernel feature is a FAIL only when the configuration needs it. The
connection flags are netvol plugin's, with the same environment twins; with
none, the storage daemon of this host's netvol run is checked when there is
one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if c := d.f.conn(); c.UseLocalDaemon() {
				d.f.server, d.f.tokenFile = c.Server, c.TokenFile
			}
			return d.report(cmd.OutOrStdout(), d.run(cmd.Context()), asJSON)
		},
	}
	adoptFlags(pluginFlagDefs(&d.f), cmd, false,
		"server", "token-file", "token", "nbd", "nfs", "nfs-version", "nfs-port", "nfs-mount-port", "socket", "state-dir")
	fl := cmd.Flags()
	fl.StringVar(&d.dockerHost, "docker-host", envOr("DOCKER_HOST", "unix:///run/docker.sock"), "the Docker daemon's socket, unix:///path or tcp://host:port [DOCKER_HOST]")
	fl.DurationVar(&d.env.timeout, "timeout", 3*time.Second, "time each check may take")
	fl.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

// run runs the groups of checks side by side and returns their results in
// a fixed order.
func (d *doctor) run(ctx context.Context) []checkResult {
	groups := []func(context.Context) []checkResult{
		d.configChecks, d.blockChecks, d.nfsClientChecks, d.daemonChecks, d.nfsServerChecks, d.dockerChecks,
	}
	results := make([][]checkResult, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Go(func() { results[i] = g(ctx) })
	}
	wg.Wait()
	return slices.Concat(results...)
}

// bounded runs fn with d's timeout; when fn overruns, it returns late and
// leaves fn to finish in the background.
func bounded[T any](ctx context.Context, timeout time.Duration, fn func(context.Context) T, late T) T {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan T, 1)
	go func() { done <- fn(ctx) }()
	select {
	case v := <-done:
		return v
	case <-ctx.Done():
		return late
	}
}

// check runs one check bounded by the timeout; overrunning is a FAIL.
func (d *doctor) check(ctx context.Context, name string, fn func(context.Context) checkResult) checkResult {
	late := problem(statusFail, name, fmt.Sprintf("no answer within %s", d.env.timeout),
		"see why in the other checks; on a slow network give more --timeout")
	return bounded(ctx, d.env.timeout, fn, late)
}

// severity is FAIL for what the configuration needs, else WARN.
func severity(needed bool) string {
	if needed {
		return statusFail
	}
	return statusWarn
}

func (d *doctor) configChecks(context.Context) []checkResult {
	var have []string
	if d.f.server != "" {
		have = append(have, "storage daemon "+d.f.server)
	}
	if d.f.nfs != "" {
		have = append(have, fmt.Sprintf("NFS export %s (NFS %s)", d.f.nfs, d.f.nfsVersion))
	}
	if len(have) == 0 {
		return []checkResult{problem(statusWarn, "configuration", "no server configured: only this host is checked",
			"give --server host:port and --token-file (NETVOL_SERVER, NETVOL_TOKEN_FILE) for nbd volumes, and/or --nfs host:/export (NETVOL_NFS) for nfs volumes, as netvol plugin takes them")}
	}
	return []checkResult{passed("configuration", strings.Join(have, "; "))}
}

// path is p under the environment's root.
func (d *doctor) path(p string) string { return filepath.Join(d.env.root, p) }

func (d *doctor) exists(p string) bool {
	_, err := os.Stat(d.path(p))
	return err == nil
}

// release is the running kernel's release, as uname -r prints it.
func (d *doctor) release() string {
	b, err := os.ReadFile(d.path("/proc/sys/kernel/osrelease"))
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// hasModule says whether the running kernel has a loadable module name
// (listed in modules.dep).
func (d *doctor) hasModule(name string) bool {
	b, err := os.ReadFile(d.path(filepath.Join("/lib/modules", d.release(), "modules.dep")))
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		mod, _, _ := strings.Cut(line, ":")
		if strings.HasPrefix(filepath.Base(mod), name+".ko") {
			return true
		}
	}
	return false
}

// report prints the results and fails when a check failed.
func (d *doctor) report(w io.Writer, results []checkResult, asJSON bool) error {
	count := map[string]int{}
	for _, r := range results {
		count[r.Status]++
	}
	var err error
	if asJSON {
		err = opcmd.WriteJSON(w, struct {
			Checks []checkResult `json:"checks"`
			OK     int           `json:"ok"`
			Warn   int           `json:"warn"`
			Fail   int           `json:"fail"`
		}{results, count[statusOK], count[statusWarn], count[statusFail]})
	} else {
		err = printReport(w, results, count)
	}
	if n := count[statusFail]; n > 0 {
		return errors.Join(err, fmt.Errorf("netvol doctor: %d of %d checks failed; each FAIL line says what to do", n, len(results)))
	}
	return err
}

func printReport(w io.Writer, results []checkResult, count map[string]int) error {
	width := 0
	for _, r := range results {
		width = max(width, len(r.Check))
	}
	for _, r := range results {
		fmt.Fprintf(w, "%-4s  %-*s  %s\n", r.Status, width, r.Check, r.Detail)
		if r.Fix != "" {
			fmt.Fprintf(w, "%-4s  %-*s  fix: %s\n", "", width, "", r.Fix)
		}
	}
	_, err := fmt.Fprintf(w, "\n%d OK, %d WARN, %d FAIL\n", count[statusOK], count[statusWarn], count[statusFail])
	return err
}
