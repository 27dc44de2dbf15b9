package opcmd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/nfs"
	"github.com/netvol/netvol/server/api"
)

// Conn is how the operator commands reach the servers: the connection
// settings of netvol plugin (the same flags, with the same environment
// twins), so a host configured for the plugin needs nothing more.
type Conn struct {
	Server    string // the storage daemon's API, host:port or http(s)://host:port
	TokenFile string // the file holding its API token
	Token     string // the token itself; wins over TokenFile
	NBDAddr   string // the NBD address; "" is the API's host and the port the daemon reports
	NFS       string // the NFS export, host:/export
	// NFSVersion is the version of mounts: 4.1, 4 or 3.
	NFSVersion            string
	NFSPort, NFSMountPort int    // 0: ask the server's portmapper
	StateDir              string // the plugin's state directory; a local netvol run keeps its daemon's data in <StateDir>/server
}

// UseLocalDaemon points c at the storage daemon of this host's netvol run
// (or a netvol server whose data lies in <StateDir>/server) when no server
// at all is configured: its data directory records the API's address
// (api.AddressFile) beside the token. It reports whether it did.
func (c *Conn) UseLocalDaemon() bool {
	if c.Server != "" || c.NFS != "" || c.Token != "" || c.TokenFile != "" {
		return false
	}
	data := filepath.Join(c.StateDir, "server")
	addr, err := os.ReadFile(filepath.Join(data, api.AddressFile))
	token := filepath.Join(data, "token")
	if err != nil || strings.TrimSpace(string(addr)) == "" {
		return false
	}
	if _, err := os.Stat(token); err != nil {
		return false
	}
	c.Server, c.TokenFile = strings.TrimSpace(string(addr)), token
	return true
}

// APIToken returns the storage daemon's API token: Token, else the
// content of TokenFile.
func (c Conn) APIToken() (string, error) {
	if c.Token != "" {
		return c.Token, nil
	}
	if c.TokenFile == "" {
		return "", errors.New("no API token for the storage daemon " + c.Server +
			": give --token-file (NETVOL_TOKEN_FILE), a copy of the token file in the daemon's data directory (<data>/token), or --token (NETVOL_TOKEN)")
	}
	data, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return "", fmt.Errorf("reading the API token (--token-file, NETVOL_TOKEN_FILE): %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("the token file %s (--token-file, NETVOL_TOKEN_FILE) is empty: copy <data>/token from the storage node", c.TokenFile)
	}
	return tok, nil
}

// APIClient is a client of the storage daemon of Server, with its token.
func (c Conn) APIClient() (*api.Client, error) {
	tok, err := c.APIToken()
	if err != nil {
		return nil, err
	}
	api, err := api.New(c.Server, tok, nil)
	if err != nil {
		return nil, fmt.Errorf("--server (NETVOL_SERVER): %w", err)
	}
	return api, nil
}

// SplitNFS splits --nfs, host:/export (an IPv6 address in brackets): the
// one parser of the plugin and the operator commands.
func SplitNFS(s string) (server, export string, err error) {
	server, export, err = nfs.ParseExport(s)
	if err != nil {
		return "", "", fmt.Errorf("--nfs %q (NETVOL_NFS): %w", s, err)
	}
	return server, export, nil
}

// NFSBackend is the nfs backend of NFS, for directory management only (it
// mounts nothing); timeout bounds each connection and call.
func (c Conn) NFSBackend(timeout time.Duration) (*nfs.Backend, error) {
	server, export, err := SplitNFS(c.NFS)
	if err != nil {
		return nil, err
	}
	b, err := nfs.New(nfs.Config{Server: server, Export: export, Version: c.NFSVersion, Port: c.NFSPort,
		MountPort: c.NFSMountPort, Mounter: mount.System{}, DialTimeout: timeout, CallTimeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("--nfs %s: %w", c.NFS, err)
	}
	return b, nil
}
