package main

import (
	"github.com/spf13/cobra"

	"github.com/netvol/netvol/internal/opcmd"
)

// connFlagNames are the flags of netvol plugin that say how to reach the
// servers. The operator commands take them too, with the same environment
// twins, so a host configured for the plugin needs nothing more.
func connFlagNames() []string {
	return []string{"server", "token-file", "token", "nfs", "nfs-version", "nfs-port", "nfs-mount-port", "state-dir"}
}

// pluginFlagDefs defines every flag of netvol plugin, bound to f, on a
// command of its own: the very same definitions (name, default, environment
// twin, help), so the operator commands and the plugin cannot drift apart.
// adoptFlags then takes the ones a command wants; the others leave their
// defaults in f.
func pluginFlagDefs(f *pluginFlags) *cobra.Command {
	var defs cobra.Command
	addPluginFlags(&defs, f)
	return &defs
}

// adoptFlags adds the named flags of defs to cmd: persistent ones (for
// its subcommands too) or local ones.
func adoptFlags(defs, cmd *cobra.Command, persistent bool, names ...string) {
	for _, name := range names {
		fl := defs.Flags().Lookup(name)
		if fl == nil {
			panic("netvol plugin has no flag --" + name)
		}
		if persistent {
			cmd.PersistentFlags().AddFlag(fl)
		} else {
			cmd.Flags().AddFlag(fl)
		}
	}
}

// conn is the connection settings of f, as the operator commands take them.
func (f pluginFlags) conn() opcmd.Conn {
	return opcmd.Conn{Server: f.server, TokenFile: f.tokenFile, Token: f.token, NBDAddr: f.nbdAddr, NFS: f.nfs,
		NFSVersion: f.nfsVersion, NFSPort: f.nfsPort, NFSMountPort: f.nfsMountPort, StateDir: f.stateDir}
}
