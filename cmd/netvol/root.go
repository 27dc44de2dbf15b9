package main

import (
	"github.com/spf13/cobra"
)

// version is set by the linker (-X main.version=...) in release builds.
var version = "dev"

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "netvol",
		Short: "Docker volumes on remote storage: NFS directories and qcow2 block volumes over NBD",
		Long: `netvol is a Docker volume plugin for remote storage.

Volumes of type nfs are directories inside an NFS export; volumes of type nbd are
qcow2 images on a storage node, served over NBD and formatted ext4 on first mount.
One binary carries every role: the storage daemon, the plugin and the operator commands.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCommand())
	root.AddCommand(newServerCommand())
	root.AddCommand(newPluginCommand())
	root.AddCommand(newRunCommand())
	root.AddCommand(newAttachHelperCommand())
	root.AddCommand(newVolumeCommand())
	root.AddCommand(newDoctorCommand())
	return root
}
