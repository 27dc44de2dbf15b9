//go:build e2e

package e2e

import (
	"testing"

	"github.com/netvol/netvol/e2e/node"
)

func TestBootTmp(t *testing.T) {
	n := node.Start(t, node.Options{Name: "n0"})
	t.Log(n.MustRun(t, "true"))
	t.Log(n.ConsoleTail(30))
}
