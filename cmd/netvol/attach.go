package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/blockvol/fuseattach"
	"github.com/netvol/netvol/nbd"
)

// Attach strategies of --attach.
const (
	attachAuto      = "auto"
	attachKernel    = blockvol.MethodKernel
	attachUserspace = fuseattach.MethodUserspace
)

const modprobeTimeout = 10 * time.Second

// attachChoice is the strategy block volumes attach with, and why.
type attachChoice struct {
	Method string
	Reason string
}

// chooseAttach resolves --attach: auto takes the kernel's NBD driver when
// it is there or loads (modprobe nbd), else the userspace attach.
func chooseAttach(ctx context.Context, mode string) (attachChoice, error) {
	switch mode {
	case attachKernel, attachUserspace:
		return attachChoice{Method: mode, Reason: "--attach " + mode}, nil
	case attachAuto, "":
	default:
		return attachChoice{}, fmt.Errorf("--attach %q: want auto, kernel or userspace", mode)
	}
	err := nbd.KernelAvailable()
	if err == nil {
		return attachChoice{Method: attachKernel, Reason: "the kernel has the NBD driver"}, nil
	}
	why := err.Error()
	if errors.Is(err, nbd.ErrNoKernelNBD) {
		merr := modprobeNBD(ctx)
		if merr == nil && nbd.KernelAvailable() == nil {
			return attachChoice{Method: attachKernel, Reason: "loaded the nbd module"}, nil
		}
		why = fmt.Sprintf("the kernel has no NBD driver, and modprobe nbd: %v", orText(merr, "loaded nothing"))
	}
	return attachChoice{Method: attachUserspace, Reason: why + userspaceMissing()}, nil
}

// modprobeNBD loads the nbd module: a fixed argv, no shell.
func modprobeNBD(ctx context.Context) error {
	path, err := exec.LookPath("modprobe")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, modprobeTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "nbd").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// userspaceMissing names what the userspace attach needs and this host
// lacks, as a suffix of the reason.
func userspaceMissing() string {
	var missing []string
	for _, dev := range []string{"/dev/fuse", "/dev/loop-control"} {
		if unix.Access(dev, unix.R_OK|unix.W_OK) != nil {
			missing = append(missing, dev)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return "; but " + strings.Join(missing, " and ") + " cannot be used: block volumes will not mount"
}

func orText(err error, text string) string {
	if err == nil {
		return text
	}
	return err.Error()
}

// newAttacher builds the attacher of block volumes: the chosen strategy
// for new attachments, each strategy for releasing what it made. Userspace
// attachments of an earlier run are adopted here, before Reconcile, in
// either mode.
func newAttacher(ctx context.Context, f pluginFlags, log logrus.FieldLogger) (blockvol.Attacher, func(context.Context), error) {
	choice, err := chooseAttach(ctx, f.attach)
	if err != nil {
		return nil, nil, err
	}
	log.WithFields(logrus.Fields{"attach": choice.Method, "reason": choice.Reason}).Info("block volumes: attach strategy chosen")
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("finding the netvol binary for the attach helper: %w", err)
	}
	user := &fuseattach.Attacher{Dir: filepath.Join(f.stateDir, "attach"), Command: []string{exe, "attach-helper"},
		LogLevel: f.logLevel, Log: log.WithField("component", "attach")}
	adopt := func(ctx context.Context) {
		if err := user.Adopt(ctx); err != nil {
			log.WithError(err).Error("taking over the userspace attachments of an earlier run failed in part")
		}
	}
	adopt(ctx)
	kernel := blockvol.KernelAttacher{}
	var use blockvol.Attacher = kernel
	if choice.Method == attachUserspace {
		use = user
	}
	return blockvol.Strategies{Use: use, ByMethod: map[string]blockvol.Attacher{attachKernel: kernel, attachUserspace: user}}, adopt, nil
}

// newAttachHelperCommand is the process that serves one userspace
// attachment; the plugin starts it (configuration on stdin, start report
// on fd 3), never a user.
func newAttachHelperCommand() *cobra.Command {
	var dir, level string
	cmd := &cobra.Command{
		Use:    "attach-helper",
		Short:  "Serve one userspace attachment of a block volume (started by the plugin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logrus.New()
			lvl, err := logrus.ParseLevel(level)
			if err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log.SetLevel(lvl)
			var st unix.Stat_t
			if dir == "" || unix.Fstat(3, &st) != nil {
				return errors.New("attach-helper is started by netvol plugin: it needs --dir and a status descriptor (fd 3)")
			}
			status := os.NewFile(3, "status")
			return fuseattach.RunHelper(cmd.Context(), dir, os.Stdin, status, log.WithField("dir", dir))
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the attachment's directory")
	cmd.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	return cmd
}
