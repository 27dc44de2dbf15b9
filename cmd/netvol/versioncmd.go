package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/netvol/netvol/internal/opcmd"
	"github.com/spf13/cobra"
)

// versionInfo is what netvol version prints.
type versionInfo struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"` // the VCS revision of a dev build
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func newVersionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version [--json]",
		Short: "Print netvol's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := buildVersion()
			if asJSON {
				return opcmd.WriteJSON(cmd.OutOrStdout(), v)
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "netvol %s\n", v.Version)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, with the Go version and the platform")
	return cmd
}

// buildVersion is the linker's version, or for a dev build "dev-" and the
// VCS revision when the build recorded one.
func buildVersion() versionInfo {
	v := versionInfo{Version: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if info, ok := debug.ReadBuildInfo(); ok && v.Version == "dev" {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				v.Version, v.Revision = "dev-"+s.Value, s.Value
			}
		}
	}
	return v
}
