package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"
)

func newDrainCommand() *cobra.Command {
	v := &volumeCmd{}
	cmd := &cobra.Command{
		Use:   "drain SERVER",
		Short: "Move every detached nbd volume off a storage server of the pool",
		Long: `Move every detached nbd volume off SERVER (host:port, as --server names it) to
the other servers of the pool, each where placement puts it, one at a time, as
netvol volume move does. Start SERVER with --no-new-volumes first, so that no
new volume lands there meanwhile. Volumes attached by a host, clones, and
volumes with clones or snapshots stay: they are listed with the reason, and the
exit status is non-zero; run drain again once they are detached.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			host, _ := os.Hostname()
			return v.ops(cmd).Drain(cmd.Context(), args[0], host)
		},
	}
	adoptFlags(pluginFlagDefs(&v.conn), cmd, false, "server", "token-file", "token")
	cmd.Flags().DurationVar(&v.timeout, "timeout", time.Hour, "give up after this long")
	return cmd
}
