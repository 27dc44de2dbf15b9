package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/blockvol/attachmethod"
	"github.com/netvol/netvol/blockvol/fuseattach"
)

// newAttacher builds the attacher of block volumes: the chosen strategy
// for new attachments, each strategy for releasing what it made. Userspace
// attachments of an earlier run are adopted here, before Reconcile, in
// either mode.
func newAttacher(ctx context.Context, f pluginFlags, log logrus.FieldLogger) (blockvol.Attacher, func(context.Context), error) {
	choice, err := attachmethod.Probe(ctx, f.attach, attachmethod.System(true))
	if err != nil {
		return nil, nil, err
	}
	chosen := log.WithFields(logrus.Fields{"attach": choice.Method, "reason": choice.Reason})
	if choice.Usable() {
		chosen.Info("block volumes: attach strategy chosen")
	} else {
		chosen.Warn("block volumes: attach strategy chosen, but this host lacks what it needs (netvol doctor says what to do)")
	}
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
	if choice.Method == attachmethod.Userspace {
		use = user
	}
	return blockvol.Strategies{Use: use, ByMethod: map[string]blockvol.Attacher{attachmethod.Kernel: kernel, attachmethod.Userspace: user}}, adopt, nil
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
