package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/nfs"
	"github.com/netvol/netvol/server"
	"github.com/netvol/netvol/server/api"
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

// useLocalDaemon points f at the storage daemon of this host's netvol run
// (or a netvol server whose data lies in <state-dir>/server) when no server
// at all is configured: its data directory records the API's address
// (server.APIAddressFile) beside the token. It reports whether it did.
func useLocalDaemon(f *pluginFlags) bool {
	if f.server != "" || f.nfs != "" || f.token != "" || f.tokenFile != "" {
		return false
	}
	data := filepath.Join(f.stateDir, "server")
	addr, err := os.ReadFile(filepath.Join(data, server.APIAddressFile))
	token := filepath.Join(data, "token")
	if err != nil || strings.TrimSpace(string(addr)) == "" {
		return false
	}
	if _, err := os.Stat(token); err != nil {
		return false
	}
	f.server, f.tokenFile = strings.TrimSpace(string(addr)), token
	return true
}

// apiToken returns the storage daemon's API token: --token, else the
// content of --token-file.
func apiToken(f pluginFlags) (string, error) {
	if f.token != "" {
		return f.token, nil
	}
	if f.tokenFile == "" {
		return "", errors.New("no API token for the storage daemon " + f.server +
			": give --token-file (NETVOL_TOKEN_FILE), a copy of the token file in the daemon's data directory (<data>/token), or --token (NETVOL_TOKEN)")
	}
	data, err := os.ReadFile(f.tokenFile)
	if err != nil {
		return "", fmt.Errorf("reading the API token (--token-file, NETVOL_TOKEN_FILE): %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("the token file %s (--token-file, NETVOL_TOKEN_FILE) is empty: copy <data>/token from the storage node", f.tokenFile)
	}
	return tok, nil
}

// newAPIClient is a client of the storage daemon of --server, with its token.
func newAPIClient(f pluginFlags) (*api.Client, error) {
	tok, err := apiToken(f)
	if err != nil {
		return nil, err
	}
	api, err := api.New(f.server, tok, nil)
	if err != nil {
		return nil, fmt.Errorf("--server (NETVOL_SERVER): %w", err)
	}
	return api, nil
}

// splitNFS splits --nfs, host:/export (an IPv6 address in brackets).
func splitNFS(s string) (server, export string, err error) {
	server, export, err = nfs.ParseExport(s)
	if err != nil {
		return "", "", fmt.Errorf("--nfs %q (NETVOL_NFS): %w", s, err)
	}
	return server, export, nil
}

// newNFSBackend is the nfs backend of --nfs, for directory management only
// (it mounts nothing); timeout bounds each connection and call.
func newNFSBackend(f pluginFlags, timeout time.Duration) (*nfs.Backend, error) {
	server, export, err := splitNFS(f.nfs)
	if err != nil {
		return nil, err
	}
	b, err := nfs.New(nfs.Config{Server: server, Export: export, Version: f.nfsVersion, Port: f.nfsPort,
		MountPort: f.nfsMountPort, Mounter: mount.System{}, DialTimeout: timeout, CallTimeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("--nfs %s: %w", f.nfs, err)
	}
	return b, nil
}
