package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	dockervolume "github.com/docker/go-plugins-helpers/volume"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/netvol/netvol/internal/metrics"
	"github.com/netvol/netvol/internal/sockets"
	"github.com/netvol/netvol/internal/units"
	"github.com/netvol/netvol/state"
	"github.com/netvol/netvol/volume"
	"github.com/netvol/netvol/volume/backend"
)

// pluginFlags are the plugin's settings; each has an environment twin,
// which is how a managed plugin is configured (docker plugin set).
type pluginFlags struct {
	nfs, nfsVersion, server, nbdAddr, tokenFile, token, node string
	stateDir, mountRoot, defaultType, defaultSize, logLevel  string
	socket, metricsListen                                    string
	attach                                                   string // auto, kernel or userspace
	nfsPort, nfsMountPort                                    int
}

func newPluginCommand() *cobra.Command {
	var f pluginFlags
	cmd := &cobra.Command{
		Use:   "plugin",
		Short: "Run the Docker volume plugin (VolumeDriver on /run/docker/plugins/netvol.sock)",
		Long: `Run the Docker volume plugin on this host.

nfs volumes need --nfs (a server and export, host:/export); nbd volumes need
--server (a storage daemon's control API) and its token. Every flag has an
environment twin (shown in brackets); a flag given on the command line wins.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPlugin(cmd.Context(), f, nil) },
	}
	addPluginFlags(cmd, &f)
	return cmd
}

func addPluginFlags(cmd *cobra.Command, f *pluginFlags) {
	host, _ := os.Hostname()
	fl := cmd.Flags()
	fl.StringVar(&f.nfs, "nfs", os.Getenv("NETVOL_NFS"), "default NFS server and export, host:/export [NETVOL_NFS]")
	fl.StringVar(&f.nfsVersion, "nfs-version", envOr("NETVOL_NFS_VERSION", "4.1"), "NFS version of mounts: 4.1, 4 or 3 [NETVOL_NFS_VERSION]")
	fl.IntVar(&f.nfsPort, "nfs-port", envInt("NETVOL_NFS_PORT"), "NFS server's port (default: ask its portmapper, else 2049) [NETVOL_NFS_PORT]")
	fl.IntVar(&f.nfsMountPort, "nfs-mount-port", envInt("NETVOL_NFS_MOUNT_PORT"), "NFS server's MOUNT port (default: ask its portmapper) [NETVOL_NFS_MOUNT_PORT]")
	fl.StringVar(&f.server, "server", os.Getenv("NETVOL_SERVER"), "storage daemon API, host:port or http(s)://host:port; a pool: several, separated by commas [NETVOL_SERVER]")
	fl.StringVar(&f.nbdAddr, "nbd", os.Getenv("NETVOL_NBD"), "NBD address (default: the API's host and the NBD port it reports) [NETVOL_NBD]")
	fl.StringVar(&f.tokenFile, "token-file", os.Getenv("NETVOL_TOKEN_FILE"), "file holding the storage daemon's API token; a pool: one for all, or one per server separated by commas [NETVOL_TOKEN_FILE]")
	fl.StringVar(&f.token, "token", os.Getenv("NETVOL_TOKEN"), "the API token itself (prefer --token-file); a pool: one for all, or one per server separated by commas [NETVOL_TOKEN]")
	fl.StringVar(&f.node, "node", envOr("NETVOL_NODE", host), "this host's node name at the storage daemon [NETVOL_NODE]")
	fl.StringVar(&f.stateDir, "state-dir", envOr("NETVOL_STATE_DIR", "/var/lib/netvol"), "node state directory [NETVOL_STATE_DIR]")
	fl.StringVar(&f.mountRoot, "mount-root", os.Getenv("NETVOL_MOUNT_ROOT"), "where volumes are mounted (default <state-dir>/mounts) [NETVOL_MOUNT_ROOT]")
	fl.StringVar(&f.defaultType, "default-type", os.Getenv("NETVOL_DEFAULT_TYPE"), "type of volumes created without -o type: nfs or nbd (default: nbd when --server is set, else nfs) [NETVOL_DEFAULT_TYPE]")
	fl.StringVar(&f.defaultSize, "default-size", envOr("NETVOL_DEFAULT_SIZE", "10G"), "size of nbd volumes created without -o size [NETVOL_DEFAULT_SIZE]")
	fl.StringVar(&f.socket, "socket", envOr("NETVOL_SOCKET", "/run/docker/plugins/netvol.sock"), "the plugin's unix socket [NETVOL_SOCKET]")
	fl.StringVar(&f.metricsListen, "metrics-listen", os.Getenv("NETVOL_METRICS_LISTEN"), "serve Prometheus /metrics on this host:port (default: off) [NETVOL_METRICS_LISTEN]")
	fl.StringVar(&f.logLevel, "log-level", envOr("NETVOL_LOG_LEVEL", "info"), "debug, info, warn or error [NETVOL_LOG_LEVEL]")
	fl.StringVar(&f.attach, "attach", envOr("NETVOL_ATTACH", "auto"), "how block volumes become devices: kernel (the nbd driver), userspace (FUSE and a loop device) or auto [NETVOL_ATTACH]")
}

func envInt(key string) int {
	n, _ := strconv.Atoi(os.Getenv(key))
	return n
}

// checkPluginFlags fills defaults and refuses what can't work.
func checkPluginFlags(f *pluginFlags) (*logrus.Logger, int64, error) {
	log := logrus.New()
	lvl, err := logrus.ParseLevel(f.logLevel)
	if err != nil {
		return nil, 0, fmt.Errorf("--log-level: %w", err)
	}
	log.SetLevel(lvl)
	if f.nfs == "" && f.server == "" {
		return nil, 0, errors.New("nothing to serve: give --nfs host:/export (NETVOL_NFS), --server host:port (NETVOL_SERVER), or both")
	}
	if f.defaultType == "" {
		f.defaultType = backend.TypeNFS
		if f.server != "" {
			f.defaultType = backend.TypeNBD
		}
	}
	if f.defaultType != backend.TypeNFS && f.defaultType != backend.TypeNBD {
		return nil, 0, fmt.Errorf("--default-type %q: want nfs or nbd", f.defaultType)
	}
	size, err := units.ParseSize(f.defaultSize)
	if err != nil {
		return nil, 0, fmt.Errorf("--default-size: %w", err)
	}
	if f.node == "" {
		return nil, 0, errors.New("--node (NETVOL_NODE): no host name to default to; give one")
	}
	if !filepath.IsAbs(f.stateDir) {
		return nil, 0, fmt.Errorf("--state-dir %q: want an absolute path", f.stateDir)
	}
	if f.mountRoot == "" {
		f.mountRoot = filepath.Join(f.stateDir, "mounts")
	}
	if f.server != "" && f.token == "" && f.tokenFile == "" {
		return nil, 0, errors.New("--server needs the API token: give --token-file (NETVOL_TOKEN_FILE) or --token (NETVOL_TOKEN)")
	}
	return log, size, nil
}

// runPlugin serves the VolumeDriver protocol until ctx ends or a signal.
// ready, when not nil, is called once the socket accepts calls. Mounts
// stay in place when the plugin stops: the next start adopts them.
func runPlugin(ctx context.Context, f pluginFlags, ready func()) error {
	log, defaultSize, err := checkPluginFlags(&f)
	if err != nil {
		return err
	}
	for _, dir := range []string{f.stateDir, f.mountRoot} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	store, err := state.OpenNodeStore(filepath.Join(f.stateDir, "node.db"))
	if err != nil {
		return err
	}
	defer store.Close()
	kinds, hooks, err := newKinds(ctx, f, log)
	if err != nil {
		return err
	}
	defer hooks.close()
	calls := metrics.NewCalls()
	drv, err := volume.New(volume.Config{Store: store, Kinds: kinds, DefaultType: f.defaultType, DefaultSize: defaultSize,
		MountRoot: f.mountRoot, Host: mountHost(), Log: log.WithField("component", "driver"), Observe: calls.Observe})
	if err != nil {
		return err
	}
	stopMetrics, err := serveMetrics(f.metricsListen, metrics.NewRegistry(calls.Collector()), log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = drv.Reconcile(rctx)
	if err != nil {
		// Serve anyway: Docker needs the plugin to unmount and retry.
		log.WithError(err).Error("reconciling mounts with the node state failed in part")
	}
	hooks.reconciled(rctx)
	cancel()
	return servePlugin(ctx, log, f, drv, ready)
}

func servePlugin(ctx context.Context, log logrus.FieldLogger, f pluginFlags, drv *volume.Driver, ready func()) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	l, err := sockets.ListenUnix(f.socket, "plugin socket")
	if err != nil {
		return err
	}
	h := dockervolume.NewHandler(drv)
	failed := make(chan error, 1)
	go func() { failed <- h.Serve(l) }()
	log.WithFields(logrus.Fields{"socket": f.socket, "node": f.node, "state": f.stateDir, "mount_root": f.mountRoot,
		"nfs": f.nfs, "server": f.server, "default_type": f.defaultType}).Info("netvol plugin started")
	if ready != nil {
		ready()
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("plugin shutting down; mounts stay in place")
	case runErr = <-failed:
	}
	// The helpers' server has no graceful shutdown: closing the listener
	// ends it; a call in flight sees its connection close and Docker retries.
	l.Close()
	os.Remove(f.socket)
	if runErr != nil && !errors.Is(runErr, net.ErrClosed) {
		return runErr
	}
	log.Info("netvol plugin stopped")
	return nil
}

// serveMetrics serves /metrics on addr in the background; "" serves nothing.
func serveMetrics(addr string, reg *prometheus.Registry, log logrus.FieldLogger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(reg))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("metrics server failed")
		}
	}()
	log.WithField("addr", l.Addr().String()).Info("serving /metrics")
	return func() { srv.Close() }, nil
}
