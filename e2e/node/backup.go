//go:build e2e

package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// StartNetvolServerEnv is StartNetvolServer with environment variables set
// for the daemon alone (through env(1), which execs it: they are not in
// the daemon's argv), such as AWS_SHARED_CREDENTIALS_FILE for an S3
// backup target. No secret belongs in env: they show in env's argv
// until it execs.
func StartNetvolServerEnv(t testing.TB, env []string, extra ...string) *NetvolServer {
	t.Helper()
	dir := t.TempDir()
	s := &NetvolServer{NBDPort: FreePort(t), APIPort: FreePort(t), DataDir: filepath.Join(dir, "data"),
		TokenFile: filepath.Join(dir, "token"), owner: t}
	s.args = append(append([]string{"/usr/bin/env"}, env...), NetvolBinary(t), "server", "--data", s.DataDir,
		"--token-file", s.TokenFile, "--nbd-listen", fmt.Sprintf("127.0.0.1:%d", s.NBDPort),
		"--api-listen", fmt.Sprintf("127.0.0.1:%d", s.APIPort))
	s.args = append(s.args, extra...)
	s.start(t, filepath.Join(dir, "server.log"))
	tok, err := os.ReadFile(s.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	s.Token = strings.TrimSpace(string(tok))
	return s
}
