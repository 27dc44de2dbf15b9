package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/netvol/netvol/server"
)

func newRunCommand() *cobra.Command {
	var f pluginFlags
	var nbdListen, apiListen string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run netvol on one host: a storage daemon on loopback and the Docker plugin against it",
		Long: `Run the embedded default: a storage daemon listening on loopback only, its data
under <state-dir>/server, and the Docker volume plugin using it, in one
process. Block volumes (type nbd, the default) then work on this host with no
other setup; give --nfs host:/export to offer nfs volumes as well.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runEmbedded(cmd.Context(), f, nbdListen, apiListen)
		},
	}
	addPluginFlags(cmd, &f)
	// The embedded daemon is the server: these would only mislead.
	for _, name := range []string{"server", "token", "token-file", "nbd"} {
		_ = cmd.Flags().MarkHidden(name)
	}
	cmd.Flags().StringVar(&nbdListen, "nbd-listen", envOr("NETVOL_NBD_LISTEN", "127.0.0.1:10809"), "the storage daemon's NBD address [NETVOL_NBD_LISTEN]")
	cmd.Flags().StringVar(&apiListen, "api-listen", envOr("NETVOL_API_LISTEN", "127.0.0.1:10810"), "the storage daemon's control API address [NETVOL_API_LISTEN]")
	return cmd
}

// runEmbedded starts the storage daemon, then the plugin against it; on a
// signal the plugin stops first (mounts stay), then the daemon.
func runEmbedded(ctx context.Context, f pluginFlags, nbdListen, apiListen string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	data := filepath.Join(f.stateDir, "server")
	d, err := startServer(serverFlags{data: data, nbdListen: nbdListen, apiListen: apiListen,
		tokenFile: filepath.Join(data, "token"), maxSize: envOr("NETVOL_MAX_VOLUME_SIZE", defaultMaxVolumeSize), logLevel: f.logLevel, leaseTTL: server.DefaultLeaseTTL, weight: 1,
		backupTarget: os.Getenv("NETVOL_BACKUP_TARGET"), s3Endpoint: os.Getenv("NETVOL_S3_ENDPOINT"),
		backupEvery: envDuration("NETVOL_BACKUP_EVERY", 0), backupKeep: envIntOr("NETVOL_BACKUP_KEEP", 0)})
	if err != nil {
		return err
	}
	srvCtx, stopServer := context.WithCancel(context.Background())
	srvDone := make(chan error, 1)
	go func() { srvDone <- d.Serve(srvCtx) }()
	f.server, f.token, f.tokenFile = "http://"+d.APIAddr().String(), d.Token(), ""
	plugErr := runPlugin(ctx, f, nil)
	stopServer()
	var srvErr error
	select {
	case srvErr = <-srvDone:
	case <-time.After(45 * time.Second):
		srvErr = errors.New("storage daemon did not stop within 45 s")
	}
	return errors.Join(plugErr, srvErr)
}
