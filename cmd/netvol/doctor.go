package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/netvol/netvol/internal/doctor"
)

func newDoctorCommand() *cobra.Command {
	var f pluginFlags
	var cfg doctor.Config
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this host and the servers it uses: kernel support, devices, servers, token, Docker, clocks",
		Long: `Check what netvol needs on this host and from its servers, and say what to do
about each problem: the kernel's NBD driver and /dev/nbd*, FUSE and loop
devices (the userspace attach), which of them netvol plugin attaches block
volumes with (--attach; the doctor loads no module, the plugin tries
modprobe nbd first), the kernel's NFS client, the storage daemon
(reachable, token accepted, NBD address, clock skew), the NFS export, the
Docker daemon and the plugin's socket.

Each line is OK, WARN or FAIL; the exit status is non-zero when a check FAILs.
A missing kernel feature is a FAIL only when the configuration needs it. The
connection flags are netvol plugin's, with the same environment twins; with
none, the storage daemon of this host's netvol run is checked when there is
one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Conn, cfg.Socket, cfg.Attach = f.conn(), f.socket, f.attach
			cfg.Conn.UseLocalDaemon()
			return doctor.Report(cmd.OutOrStdout(), doctor.Run(cmd.Context(), cfg), asJSON)
		},
	}
	adoptFlags(pluginFlagDefs(&f), cmd, false,
		"server", "token-file", "token", "nbd", "nfs", "nfs-version", "nfs-port", "nfs-mount-port", "socket", "state-dir", "attach")
	fl := cmd.Flags()
	fl.StringVar(&cfg.DockerHost, "docker-host", envOr("DOCKER_HOST", "unix:///run/docker.sock"), "the Docker daemon's socket, unix:///path or tcp://host:port [DOCKER_HOST]")
	fl.DurationVar(&cfg.Timeout, "timeout", 3*time.Second, "time each check may take")
	fl.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}
