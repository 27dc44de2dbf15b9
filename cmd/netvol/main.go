// Command netvol is the single binary that carries every netvol role: the
// storage daemon, the Docker volume plugin and the operator commands.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		// Errors are written for people: plain text, not a log record.
		fmt.Fprintf(os.Stderr, "netvol: %v\n", err)
		os.Exit(1)
	}
}
