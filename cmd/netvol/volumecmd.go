package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/netvol/netvol/internal/opcmd"
	"github.com/netvol/netvol/volume/backend"
)

// volumeCmd is what the volume subcommands share: how to reach the servers
// (netvol plugin's flags and environment) and how to answer.
type volumeCmd struct {
	conn    pluginFlags
	json    bool
	timeout time.Duration
}

func newVolumeCommand() *cobra.Command {
	v := &volumeCmd{}
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Manage volumes on the storage daemon (nbd) and the NFS export (nfs)",
		Long: `Manage netvol volumes from any host, without Docker: list, inspect, create,
clone, resize and remove them on the storage daemon (type nbd, --server) and in
the NFS export (type nfs, --nfs).

The connection flags are netvol plugin's, with the same environment twins
(shown in brackets), so a host set up for the plugin needs nothing more.
With none of them, the storage daemon of this host's netvol run is used when
there is one (its address and token under <state-dir>/server).`,
		Args: cobra.NoArgs, // an unknown subcommand is an error, not help
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	defs := pluginFlagDefs(&v.conn)
	adoptFlags(defs, cmd, true, connFlagNames()...)
	pf := cmd.PersistentFlags()
	pf.BoolVar(&v.json, "json", false, "print JSON instead of a table")
	pf.DurationVar(&v.timeout, "timeout", 30*time.Second, "give up on the servers after this long (move: give more for big volumes)")
	cmd.AddCommand(v.lsCommand(), v.inspectCommand(), v.createCommand(defs), v.cloneCommand(),
		v.resizeCommand(), v.rmCommand(), v.snapshotCommand(), v.rollbackCommand(), v.moveCommand(),
		v.backupCommand(), v.restoreCommand())
	return cmd
}

// ops is the logic of one volume subcommand, with the flags as given.
func (v *volumeCmd) ops(cmd *cobra.Command) *opcmd.Volumes {
	return &opcmd.Volumes{Conn: v.conn.conn(), DefaultType: v.conn.defaultType, DefaultSize: v.conn.defaultSize,
		JSON: v.json, Timeout: v.timeout, Out: cmd.OutOrStdout()}
}

func (v *volumeCmd) lsCommand() *cobra.Command {
	var typ string
	cmd := &cobra.Command{
		Use:     "ls [--type nbd|nfs]",
		Aliases: []string{"list"},
		Short:   "List volumes: NAME TYPE SIZE ALLOCATED ATTACHED CREATED",
		Long: `List the volumes of the storage daemon and of the NFS export. nfs volumes have
no size of their own and no attachments; their CREATED is the directory's
modification time (NFSv3 keeps no creation time).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return v.ops(cmd).Ls(cmd.Context(), typ) },
	}
	cmd.Flags().StringVar(&typ, "type", "", "only volumes of this type: nbd or nfs")
	return cmd
}

func (v *volumeCmd) inspectCommand() *cobra.Command {
	var typ string
	cmd := &cobra.Command{
		Use:   "inspect NAME... [--type nbd|nfs]",
		Short: "Show every detail of volumes, attachments included",
		Args:  cobra.MinimumNArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return v.ops(cmd).Inspect(cmd.Context(), args, typ) },
	}
	cmd.Flags().StringVar(&typ, "type", "", "look only for volumes of this type: nbd or nfs")
	return cmd
}

func (v *volumeCmd) createCommand(defs *cobra.Command) *cobra.Command {
	var c opcmd.CreateArgs
	cmd := &cobra.Command{
		Use:   "create NAME [--type nbd|nfs] [--size SIZE] [--from SOURCE] [-o KEY=VALUE]...",
		Short: "Create a volume on the storage daemon (nbd) or in the NFS export (nfs)",
		Long: `Create a volume, with the names and options docker volume create -o takes,
checked the same way. Only the options that act when the volume is made are
passed on: type, size and from for nbd volumes; uid, gid and mode for nfs
volumes. The others act when a host mounts the volume and only the host that
created it knows them: give them to docker volume create on that host.

Sizes are binary: 10G = 10GiB; plain numbers are bytes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return v.ops(cmd).Create(cmd.Context(), args[0], c) },
	}
	fl := cmd.Flags()
	fl.StringVar(&c.Type, "type", "", "nbd or nfs (default: --default-type)")
	fl.StringVar(&c.Size, "size", "", "nbd: the size, such as 10G or 512M (default: --default-size; a clone's: its source's)")
	fl.StringVar(&c.From, "from", "", "nbd: clone this volume")
	fl.StringVar(&c.FromSnapshot, "from-snapshot", "", "nbd: with --from, clone this snapshot of it")
	fl.StringArrayVarP(&c.Opts, "opt", "o", nil, "a volume option KEY=VALUE, as docker volume create -o (repeatable)")
	adoptFlags(defs, cmd, false, "default-type", "default-size")
	return cmd
}

func (v *volumeCmd) cloneCommand() *cobra.Command {
	var size, snap string
	cmd := &cobra.Command{
		Use:   "clone SOURCE NAME [--snapshot SNAP] [--size SIZE]",
		Short: "Clone an nbd volume (also while it is in use) or one of its snapshots",
		Long: `Clone an nbd volume on the storage daemon, also while it is attached and
written: NAME starts with SOURCE's data as it is now (every write flushed
before, crash-consistent), or as it was at snapshot SNAP, and SOURCE's size
(or --size, at least SOURCE's). Both go on independently, read-write. The
clone reads a frozen layer of SOURCE (qcow2 copy on write), so SOURCE cannot
be removed while clones depend on it.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return v.ops(cmd).Create(cmd.Context(), args[1], opcmd.CreateArgs{Type: backend.TypeNBD, From: args[0], FromSnapshot: snap, Size: size})
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "the clone's size, such as 20G (default: SOURCE's)")
	cmd.Flags().StringVar(&snap, "snapshot", "", "clone this snapshot of SOURCE instead of SOURCE as it is")
	return cmd
}

func (v *volumeCmd) snapshotCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Take, list and remove snapshots of nbd volumes",
		Long: `A snapshot holds an nbd volume's data as it was when taken: every write
flushed before it (crash-consistent), also while the volume is attached and
written, without the writer noticing. It takes the space of the clusters
changed since. Clone one with netvol volume clone --snapshot, roll a detached
volume back to one with netvol volume rollback.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "create VOLUME SNAP",
		Short: "Take snapshot SNAP of VOLUME (also while it is attached)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return v.ops(cmd).SnapshotCreate(cmd.Context(), args[0], args[1])
		},
	}, &cobra.Command{
		Use:     "ls VOLUME",
		Aliases: []string{"list"},
		Short:   "List VOLUME's snapshots: NAME CREATED SIZE ALLOCATED CLONES",
		Args:    cobra.ExactArgs(1),
		RunE:    func(cmd *cobra.Command, args []string) error { return v.ops(cmd).SnapshotLs(cmd.Context(), args[0]) },
	}, &cobra.Command{
		Use:   "rm VOLUME SNAP",
		Short: "Remove snapshot SNAP of VOLUME and free its space (refused while clones depend on it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return v.ops(cmd).SnapshotRm(cmd.Context(), args[0], args[1])
		},
	})
	return cmd
}

// longTimeout is the --timeout of the commands that move a volume's data
// when the flag is not given.
const longTimeout = time.Hour

// long returns the logic of a command that moves data: its deadline is
// an hour unless --timeout was given.
func (v *volumeCmd) long(cmd *cobra.Command) *opcmd.Volumes {
	ops := v.ops(cmd)
	if f := cmd.Flag("timeout"); f == nil || !f.Changed {
		ops.Timeout = longTimeout
	}
	return ops
}

func (v *volumeCmd) backupCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Back nbd volumes up off the storage node, list, verify and remove backups",
		Long: `A backup holds an nbd volume's data as it was at a snapshot (crash-consistent,
also while the volume is attached and written), on the storage daemon's backup
target (--backup-target: a directory or an S3 bucket). The first backup of a
volume reads it all; later ones read only the clusters changed since, yet
every backup restores on its own (netvol volume restore), on any storage
daemon that sees the same target. Identical data is stored once.

These commands wait for the daemon as long as the work takes: up to an hour
unless --timeout says otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "create VOLUME",
		Short: "Back VOLUME up (also while it is attached); prints the backup's ID",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return v.long(cmd).BackupCreate(cmd.Context(), args[0]) },
	}, &cobra.Command{
		Use:     "ls [VOLUME]",
		Aliases: []string{"list"},
		Short:   "List the complete backups on the target: ID VOLUME CREATED SIZE DATA STORED PARENT",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vol := ""
			if len(args) == 1 {
				vol = args[0]
			}
			return v.ops(cmd).BackupLs(cmd.Context(), vol)
		},
	}, &cobra.Command{
		Use:     "rm ID",
		Aliases: []string{"remove"},
		Short:   "Remove a backup and the chunks no other backup holds (the others stay whole)",
		Args:    cobra.ExactArgs(1),
		RunE:    func(cmd *cobra.Command, args []string) error { return v.long(cmd).BackupRm(cmd.Context(), args[0]) },
	}, &cobra.Command{
		Use:   "verify ID",
		Short: "Read every chunk of a backup back and check its checksum; names the first bad one",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return v.long(cmd).BackupVerify(cmd.Context(), args[0]) },
	})
	return cmd
}

func (v *volumeCmd) restoreCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "restore ID NAME",
		Short: "Restore backup ID as a new nbd volume NAME (on any storage daemon that sees the target)",
		Long: `Restore a backup as a new nbd volume NAME, of the backup's size, with the
volume's stored options (labels). Every chunk is checked against its checksum
first: a restore fails naming the chunk rather than making a wrong volume.
Waits up to an hour unless --timeout says otherwise.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return v.long(cmd).Restore(cmd.Context(), args[0], args[1])
		},
	}
}

func (v *volumeCmd) rollbackCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "rollback VOLUME SNAP",
		Short: "Reset a detached nbd volume to its snapshot SNAP (what it holds now is lost)",
		Long: `Reset an nbd volume to its snapshot SNAP: the volume's data since then is
discarded. Refused while a node has the volume attached. Its snapshots, SNAP
and the later ones, stay.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return v.ops(cmd).Rollback(cmd.Context(), args[0], args[1])
		},
	}
}

func (v *volumeCmd) resizeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "resize NAME SIZE",
		Short: "Grow an nbd volume to SIZE (such as 20G), or by +SIZE, also while it is mounted",
		Long: `Grow an nbd volume on the storage daemon to SIZE, or by +SIZE. Volumes only
grow, and a volume that clones depend on cannot grow. While a host has the
volume mounted, that host grows its device and the ext4 file system on it
online (a running container sees the new size), and the command returns once
it has; should it not within the daemon's wait (20 s), the command says which
host is pending and why, and exits non-zero. A volume not mounted anywhere
grows its file system at its next mount.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return v.ops(cmd).Resize(cmd.Context(), args[0], args[1])
		},
	}
}

func (v *volumeCmd) rmCommand() *cobra.Command {
	var typ string
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NAME... [--type nbd|nfs] [--force]",
		Aliases: []string{"remove"},
		Short:   "Remove volumes; nbd volumes are refused while attached",
		Long: `Remove volumes and their data. The storage daemon refuses to remove an nbd
volume while a node has it attached, or while clones depend on it, and says
which. netvol keeps no record of which hosts mount an nfs volume, so removing
one needs --force: make sure no container uses it first; its directory and
everything in it are deleted.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return v.ops(cmd).Rm(cmd.Context(), args, typ, force) },
	}
	cmd.Flags().StringVar(&typ, "type", "", "the volume's type, when a name is a volume of each type: nbd or nfs")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove nfs volumes, which may be in use unseen")
	return cmd
}

func (v *volumeCmd) moveCommand() *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "move NAME --to SERVER",
		Short: "Move a detached nbd volume to another storage server of the pool",
		Long: `Move an nbd volume to another storage server of the pool (--server lists
them; SERVER as given there, host:port). The volume must be detached: no host
may mount it while it moves (the move holds it, as a node of its own). The data
is copied over NBD (zero blocks skipped), read back and compared, then the
volume switches over: a crash at any point leaves it on exactly one server,
readable, and running the move again finishes or redoes it. Clones (of the
volume or of a snapshot) stay with their source, and a volume with clones or
snapshots cannot move: the move names them (a move copies the volume's data,
not its snapshots).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			host, _ := os.Hostname()
			return v.ops(cmd).Move(cmd.Context(), args[0], to, host)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the storage server to move it to, host:port as --server names it (required)")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}
