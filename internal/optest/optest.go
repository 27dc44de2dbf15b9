// Package optest helps the tests of the operator commands (cmd/netvol,
// internal/opcmd, internal/doctor): a storage daemon's API in process and
// checks of errors and tables. Only tests import it.
package optest

import (
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/server"
	"github.com/netvol/netvol/server/api"
)

// Token is the API token of the daemons StartDaemon starts.
const Token = "op-t0ken"

// Daemon is a storage daemon's API in process, with an NBD listener whose
// address it reports (nothing serves NBD on it: connecting is all the
// doctor does).
type Daemon struct {
	URL       string
	API       *api.Client
	NBDL      net.Listener
	TokenFile string // holds Token
}

// StartDaemon starts a Daemon that lasts as long as the test.
func StartDaemon(t *testing.T) *Daemon {
	t.Helper()
	return StartDaemonConfig(t, server.Config{DataDir: t.TempDir(), MaxVolumeSize: 1 << 40})
}

// StartDaemonConfig starts a Daemon on a service of cfg (a backup target,
// say).
func StartDaemonConfig(t *testing.T, cfg server.Config) *Daemon {
	t.Helper()
	svc, err := server.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	nbdL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nbdL.Close() })
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv := httptest.NewServer(server.NewAPI(svc, Token, log, server.WithNBDAddr(nbdL.Addr())))
	t.Cleanup(srv.Close)
	api, err := api.New(srv.URL, Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &Daemon{URL: srv.URL, API: api, NBDL: nbdL, TokenFile: tokenFile}
}

// WantErr fails the test unless err says each of parts.
func WantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

// TableRows splits a table into rows of fields, header first.
func TableRows(out string) [][]string {
	var rows [][]string
	for line := range strings.Lines(strings.TrimSpace(out)) {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}
