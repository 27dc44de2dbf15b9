// Package doctor holds the checks of netvol doctor: what netvol needs on
// this host (kernel support, devices) and from its servers (reachable, token,
// NBD address, clock skew, the NFS export), Docker and the plugin socket,
// each with what to do about a problem. cmd/netvol maps its flags onto
// Config.
package doctor

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

	"github.com/netvol/netvol/internal/opcmd"
	"github.com/netvol/netvol/nbd"
)

// Statuses of a check.
const (
	StatusOK   = "OK"
	StatusWarn = "WARN"
	StatusFail = "FAIL"
)

// Result is one line of the doctor's report; Fix says what to do
// when Status is not OK.
type Result struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

func passed(check, detail string) Result {
	return Result{Check: check, Status: StatusOK, Detail: detail}
}

func problem(status, check, detail, fix string) Result {
	return Result{Check: check, Status: status, Detail: detail, Fix: fix}
}

// Config is what netvol doctor checks: the plugin's connection settings,
// its socket, the Docker daemon, and how to look at the host (tests give
// a tree of their own and fakes).
type Config struct {
	Conn       opcmd.Conn    // the servers and the token, as netvol plugin takes them
	Socket     string        // the plugin's socket
	DockerHost string        // the Docker daemon: unix:///path or tcp://host:port
	Attach     string        // netvol plugin's --attach: auto ("" too), kernel or userspace
	Timeout    time.Duration // bounds each check
	// Root is the prefix of /proc, /sys, /dev and /lib/modules; "" is the
	// host's.
	Root      string
	KernelNBD func() error     // nil when the kernel's NBD driver is there; nil: nbd.KernelAvailable
	Now       func() time.Time // the local clock; nil: time.Now
}

// doctor runs the checks of one netvol doctor.
type doctor struct {
	cfg Config
}

// Run runs the checks of cfg and returns their results in a fixed order.
func Run(ctx context.Context, cfg Config) []Result {
	if cfg.KernelNBD == nil {
		cfg.KernelNBD = nbd.KernelAvailable
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return (&doctor{cfg: cfg}).run(ctx)
}

// run runs the groups of checks side by side and returns their results in
// a fixed order.
func (d *doctor) run(ctx context.Context) []Result {
	groups := []func(context.Context) []Result{
		d.configChecks, d.blockChecks, d.nfsClientChecks, d.daemonChecks, d.nfsServerChecks, d.dockerChecks,
	}
	results := make([][]Result, len(groups))
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
func (d *doctor) check(ctx context.Context, name string, fn func(context.Context) Result) Result {
	late := problem(StatusFail, name, fmt.Sprintf("no answer within %s", d.cfg.Timeout),
		"see why in the other checks; on a slow network give more --timeout")
	return bounded(ctx, d.cfg.Timeout, fn, late)
}

// severity is FAIL for what the configuration needs, else WARN.
func severity(needed bool) string {
	if needed {
		return StatusFail
	}
	return StatusWarn
}

func (d *doctor) configChecks(context.Context) []Result {
	var have []string
	if d.cfg.Conn.Server != "" {
		have = append(have, "storage daemon "+d.cfg.Conn.Server)
	}
	if d.cfg.Conn.NFS != "" {
		have = append(have, fmt.Sprintf("NFS export %s (NFS %s)", d.cfg.Conn.NFS, d.cfg.Conn.NFSVersion))
	}
	if len(have) == 0 {
		return []Result{problem(StatusWarn, "configuration", "no server configured: only this host is checked",
			"give --server host:port and --token-file (NETVOL_SERVER, NETVOL_TOKEN_FILE) for nbd volumes, and/or --nfs host:/export (NETVOL_NFS) for nfs volumes, as netvol plugin takes them")}
	}
	return []Result{passed("configuration", strings.Join(have, "; "))}
}

// path is p under the environment's root.
func (d *doctor) path(p string) string { return filepath.Join(d.cfg.Root, p) }

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

// Report prints the results and fails when a check failed.
func Report(w io.Writer, results []Result, asJSON bool) error {
	count := map[string]int{}
	for _, r := range results {
		count[r.Status]++
	}
	var err error
	if asJSON {
		err = opcmd.WriteJSON(w, struct {
			Checks []Result `json:"checks"`
			OK     int      `json:"ok"`
			Warn   int      `json:"warn"`
			Fail   int      `json:"fail"`
		}{results, count[StatusOK], count[StatusWarn], count[StatusFail]})
	} else {
		err = printReport(w, results, count)
	}
	if n := count[StatusFail]; n > 0 {
		return errors.Join(err, fmt.Errorf("netvol doctor: %d of %d checks failed; each FAIL line says what to do", n, len(results)))
	}
	return err
}

func printReport(w io.Writer, results []Result, count map[string]int) error {
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
	_, err := fmt.Fprintf(w, "\n%d OK, %d WARN, %d FAIL\n", count[StatusOK], count[StatusWarn], count[StatusFail])
	return err
}
