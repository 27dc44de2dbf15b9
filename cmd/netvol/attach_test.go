package main

import (
	"context"
	"strings"
	"testing"
)

// --attach takes kernel and userspace as they are, and refuses the rest
// (auto depends on the host's kernel: the e2e suites cover it).
func TestChooseAttach(t *testing.T) {
	for _, mode := range []string{attachKernel, attachUserspace} {
		c, err := chooseAttach(context.Background(), mode)
		if err != nil || c.Method != mode || !strings.Contains(c.Reason, "--attach") {
			t.Errorf("chooseAttach(%q) = %+v, %v", mode, c, err)
		}
	}
	if _, err := chooseAttach(context.Background(), "magic"); err == nil || !strings.Contains(err.Error(), "want auto, kernel or userspace") {
		t.Errorf("chooseAttach(magic) = %v", err)
	}
}

func TestAttachFlagEnvTwin(t *testing.T) {
	t.Setenv("NETVOL_ATTACH", "userspace")
	for _, cmd := range []string{"plugin", "run"} {
		c := newPluginCommand()
		if cmd == "run" {
			c = newRunCommand()
		}
		if got := c.Flags().Lookup("attach").Value.String(); got != "userspace" {
			t.Errorf("netvol %s --attach = %q from NETVOL_ATTACH", cmd, got)
		}
	}
}
