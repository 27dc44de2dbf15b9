//go:build e2e

package node

import "testing"

// StartNetvolServerEnv is StartNetvolServer with environment variables set
// for the daemon alone (through env(1), which execs it: they are not in
// the daemon's argv), such as AWS_SHARED_CREDENTIALS_FILE for an S3
// backup target. No secret belongs in env: they show in env's argv
// until it execs.
func StartNetvolServerEnv(t testing.TB, env []string, extra ...string) *NetvolServer {
	t.Helper()
	return startNetvolServer(t, append([]string{"/usr/bin/env"}, env...), extra...)
}
