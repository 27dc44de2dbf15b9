// Command netvol is the single binary that carries every netvol role: the
// storage daemon, the Docker volume plugin and the operator commands.
package main

import (
	"os"

	"github.com/sirupsen/logrus"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		logrus.WithError(err).Error("netvol failed")
		os.Exit(1)
	}
}
