//go:build e2e

package node

// The netvol storage daemon fixture goes here once `netvol server` exists
// (DESIGN.md, "Processes"). It is not faked in the meantime: suites that need
// a storage node wait for the real one.
//
// Planned shape, built on the same pieces as the other host fixtures:
//
//	type NetvolServer struct {
//		NBDPort, APIPort int    // on the host's loopback; nodes dial HostAddr
//		DataDir          string // qcow2 images and the BoltDB registry
//		Token            string // bearer token for the control API
//		*Daemon
//	}
//
//	func StartNetvolServer(t testing.TB) *NetvolServer
//
// It would take NetvolBinary(t), pick ports with FreePort, start
// `netvol server` with StartDaemon (stopped by t.Cleanup; Daemon.Kill for a
// storage-node crash), and wait on GET /healthz rather than on the port.
// Nodes run the plugin from the same binary: NetvolBinary's path is valid
// inside a node.
