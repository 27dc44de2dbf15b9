package main

import (
	"testing"
)

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
