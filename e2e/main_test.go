//go:build e2e

// Package e2e holds netvol's end-to-end suites: real kernels in node VMs
// (package node), nfs-ganesha and qemu-nbd on the host, dockerd in the nodes.
// Run them with `make e2e`.
package e2e

import (
	"os"
	"testing"

	"github.com/netvol/netvol/e2e/node"
)

func TestMain(m *testing.M) { os.Exit(node.Main(m)) }
