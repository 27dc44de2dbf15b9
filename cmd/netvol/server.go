package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/netvol/netvol/internal/metrics"
	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/server"
)

// serverFlags are the storage daemon's settings; each has an environment twin.
type serverFlags struct {
	data, nbdListen, apiListen, tokenFile, maxSize, logLevel string
	tlsCert, tlsKey                                          string
	listExports, tlsRequired                                 bool
	leaseTTL                                                 time.Duration
	// NBD limits; zero means the nbd.Server default.
	handshakeTimeout, replyTimeout time.Duration
	maxHandshakes, maxExportConns  int
}

func newServerCommand() *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the storage daemon: qcow2 volumes served over NBD, with the control API",
		Long: `Run the storage daemon. It keeps one qcow2 image per volume under --data,
serves attached volumes over NBD and answers the control API v1 over HTTP.

Every flag has an environment twin (shown in brackets); a flag given on the
command line wins.

With --tls-cert and --tls-key the control API serves HTTPS only and the NBD
server offers NBD_OPT_STARTTLS; --tls-required also makes it refuse clients
that do not upgrade. Without a certificate both speak plain text: listen on
loopback or a trusted network.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runServer(cmd.Context(), f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.data, "data", os.Getenv("NETVOL_DATA"), "data directory: registry and images (required) [NETVOL_DATA]")
	fl.StringVar(&f.nbdListen, "nbd-listen", envOr("NETVOL_NBD_LISTEN", "127.0.0.1:10809"), "NBD address: host:port or unix:/path [NETVOL_NBD_LISTEN]")
	fl.StringVar(&f.apiListen, "api-listen", envOr("NETVOL_API_LISTEN", "127.0.0.1:10810"), "control API address host:port [NETVOL_API_LISTEN]")
	fl.StringVar(&f.tokenFile, "token-file", os.Getenv("NETVOL_TOKEN_FILE"), "bearer token of the API; created (mode 0600) with a random token if missing (default <data>/token) [NETVOL_TOKEN_FILE]")
	fl.BoolVar(&f.listExports, "list-exports", envBool("NETVOL_LIST_EXPORTS"), "answer NBD_OPT_LIST with the volume names [NETVOL_LIST_EXPORTS]")
	fl.StringVar(&f.maxSize, "max-volume-size", envOr("NETVOL_MAX_VOLUME_SIZE", "1T"), "largest volume size accepted [NETVOL_MAX_VOLUME_SIZE]")
	fl.DurationVar(&f.leaseTTL, "lease-ttl", envDuration("NETVOL_LEASE_TTL", server.DefaultLeaseTTL), "attachment lease duration [NETVOL_LEASE_TTL]")
	fl.StringVar(&f.tlsCert, "tls-cert", os.Getenv("NETVOL_TLS_CERT"), "PEM certificate (chain) for HTTPS and NBD STARTTLS; needs --tls-key [NETVOL_TLS_CERT]")
	fl.StringVar(&f.tlsKey, "tls-key", os.Getenv("NETVOL_TLS_KEY"), "PEM private key of --tls-cert [NETVOL_TLS_KEY]")
	fl.BoolVar(&f.tlsRequired, "tls-required", envBool("NETVOL_TLS_REQUIRED"), "refuse NBD clients that do not upgrade with STARTTLS; needs --tls-cert [NETVOL_TLS_REQUIRED]")
	fl.DurationVar(&f.handshakeTimeout, "nbd-handshake-timeout", envDuration("NETVOL_NBD_HANDSHAKE_TIMEOUT", 30*time.Second), "deadline of an NBD handshake, reads and writes, from accept to transmission [NETVOL_NBD_HANDSHAKE_TIMEOUT]")
	fl.IntVar(&f.maxHandshakes, "nbd-max-handshakes", envIntOr("NETVOL_NBD_MAX_HANDSHAKES", 64), "NBD connections in the handshake at once; more wait to be accepted [NETVOL_NBD_MAX_HANDSHAKES]")
	fl.IntVar(&f.maxExportConns, "nbd-max-export-conns", envIntOr("NETVOL_NBD_MAX_EXPORT_CONNS", 16), "NBD connections to one export at once; more are refused [NETVOL_NBD_MAX_EXPORT_CONNS]")
	fl.DurationVar(&f.replyTimeout, "nbd-reply-timeout", envDuration("NETVOL_NBD_REPLY_TIMEOUT", 2*time.Minute), "time an NBD reply may take to go out before the connection is closed [NETVOL_NBD_REPLY_TIMEOUT]")
	fl.StringVar(&f.logLevel, "log-level", envOr("NETVOL_LOG_LEVEL", "info"), "debug, info, warn or error [NETVOL_LOG_LEVEL]")
	return cmd
}

// envOr returns the environment's value of key, or def when it is unset or
// empty (a managed plugin's settable variables are never unset).
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func envBool(key string) bool {
	b, _ := strconv.ParseBool(os.Getenv(key))
	return b
}

// envIntOr is the integer in the environment variable key, or def.
func envIntOr(key string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return n
	}
	return def
}

func envDuration(key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(key)); err == nil {
		return d
	}
	return def
}

func runServer(ctx context.Context, f serverFlags) error {
	d, err := startServer(f)
	if err != nil {
		return err
	}
	return d.serve(ctx)
}

// daemonStats reads what the metrics show of the registry.
func daemonStats(svc *server.Service) func() (metrics.DaemonStats, error) {
	return func() (metrics.DaemonStats, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		vols, err := svc.ListVolumes(ctx)
		if err != nil {
			return metrics.DaemonStats{}, err
		}
		c := svc.Counters()
		s := metrics.DaemonStats{Volumes: len(vols), Attaches: c.Attaches, Renewals: c.Renewals, Takeovers: c.Takeovers}
		for _, v := range vols {
			s.Attachments += len(v.Attachments)
		}
		return s, nil
	}
}

// storageDaemon is a storage daemon whose listeners are open: clients can
// connect before serve runs.
type storageDaemon struct {
	log    logrus.FieldLogger
	svc    *server.Service
	nbdSrv *nbd.Server
	nbdL   net.Listener
	apiSrv *http.Server
	apiL   net.Listener
	token  string
}

// startServer opens the registry and the listeners.
func startServer(f serverFlags) (*storageDaemon, error) {
	log, maxSize, err := checkServerFlags(&f)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := loadTLS(f)
	if err != nil {
		return nil, err
	}
	token, err := loadToken(f.tokenFile)
	if err != nil {
		return nil, err
	}
	svc, err := server.Open(server.Config{DataDir: f.data, MaxVolumeSize: maxSize, LeaseTTL: f.leaseTTL, Log: log})
	if err != nil {
		return nil, err
	}
	nbdL, err := listenNBD(f.nbdListen)
	if err != nil {
		svc.Close()
		return nil, err
	}
	apiL, err := net.Listen("tcp", f.apiListen)
	if err != nil {
		nbdL.Close()
		svc.Close()
		return nil, fmt.Errorf("api listen: %w", err)
	}
	d := &storageDaemon{log: log, svc: svc, nbdL: nbdL, apiL: apiL, token: token,
		nbdSrv: &nbd.Server{Exports: svc, ListExports: f.listExports, Logger: log.WithField("component", "nbd"),
			HandshakeTimeout: f.handshakeTimeout, MaxHandshakes: f.maxHandshakes,
			MaxExportConns: f.maxExportConns, ReplyTimeout: f.replyTimeout},
	}
	reg := metrics.NewRegistry(metrics.NewNBDCollector(d.nbdSrv.Stats), metrics.NewDaemonCollector(daemonStats(svc)))
	d.apiSrv = &http.Server{Handler: server.NewAPI(svc, token, log.WithField("component", "api"),
		server.WithNBDAddr(nbdL.Addr()), server.WithMetrics(metrics.Handler(reg))),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	if tlsCfg != nil {
		d.nbdSrv.TLSConfig, d.nbdSrv.TLSRequired = tlsCfg.Clone(), f.tlsRequired
		d.apiSrv.TLSConfig = tlsCfg.Clone() // ServeTLS adds h2 to NextProtos
	}
	log.WithFields(logrus.Fields{"data": f.data, "nbd": nbdL.Addr().String(), "api": apiL.Addr().String(),
		"tls": tlsCfg != nil, "tls_required": f.tlsRequired,
		"lease_ttl": f.leaseTTL, "max_volume_size": maxSize}).Info("netvol server started")
	return d, nil
}

// serve runs both servers until a signal or a listener failure, then shuts
// down in order: NBD (requests in flight finish), API, images, registry.
func (d *storageDaemon) serve(ctx context.Context) error {
	log, svc, nbdSrv, nbdL, apiSrv, apiL := d.log, d.svc, d.nbdSrv, d.nbdL, d.apiSrv, d.apiL
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	failed := make(chan error, 2)
	go func() { failed <- fmt.Errorf("nbd: %w", nbdSrv.Serve(nbdL)) }()
	go func() {
		if apiSrv.TLSConfig != nil {
			failed <- fmt.Errorf("api: %w", apiSrv.ServeTLS(apiL, "", ""))
			return
		}
		failed <- fmt.Errorf("api: %w", apiSrv.Serve(apiL))
	}()
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-failed:
		log.WithError(runErr).Error("a listener failed; shutting down")
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if err := nbdSrv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("nbd shutdown: %w", err))
	}
	if err := apiSrv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("api shutdown: %w", err))
	}
	if err := svc.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(append(errs, runErr)...); err != nil {
		return err
	}
	log.Info("netvol server stopped")
	return nil
}

func checkServerFlags(f *serverFlags) (*logrus.Logger, int64, error) {
	log := logrus.New()
	lvl, err := logrus.ParseLevel(f.logLevel)
	if err != nil {
		return nil, 0, fmt.Errorf("--log-level: %w", err)
	}
	log.SetLevel(lvl)
	if f.data == "" {
		return nil, 0, errors.New("--data (or NETVOL_DATA) is required")
	}
	maxSize, err := server.ParseSize(f.maxSize)
	if err != nil {
		return nil, 0, fmt.Errorf("--max-volume-size: %w", err)
	}
	if f.leaseTTL <= 0 {
		return nil, 0, fmt.Errorf("--lease-ttl %s: must be positive", f.leaseTTL)
	}
	if err := checkNBDLimits(f); err != nil {
		return nil, 0, err
	}
	switch {
	case f.tlsCert == "" && f.tlsKey != "":
		return nil, 0, errors.New("--tls-key (NETVOL_TLS_KEY) needs --tls-cert (NETVOL_TLS_CERT)")
	case f.tlsCert != "" && f.tlsKey == "":
		return nil, 0, errors.New("--tls-cert (NETVOL_TLS_CERT) needs --tls-key (NETVOL_TLS_KEY)")
	case f.tlsRequired && f.tlsCert == "":
		return nil, 0, errors.New("--tls-required (NETVOL_TLS_REQUIRED) needs a certificate: give --tls-cert and --tls-key")
	}
	if err := os.MkdirAll(f.data, 0o700); err != nil {
		return nil, 0, err
	}
	if f.tokenFile == "" {
		f.tokenFile = filepath.Join(f.data, "token")
	}
	return log, maxSize, nil
}

// checkNBDLimits refuses negative limits; zero (only from code: the flags
// have defaults) is the nbd.Server default.
func checkNBDLimits(f *serverFlags) error {
	switch {
	case f.handshakeTimeout < 0:
		return fmt.Errorf("--nbd-handshake-timeout %s: must be positive", f.handshakeTimeout)
	case f.replyTimeout < 0:
		return fmt.Errorf("--nbd-reply-timeout %s: must be positive", f.replyTimeout)
	case f.maxHandshakes < 0:
		return fmt.Errorf("--nbd-max-handshakes %d: must be positive", f.maxHandshakes)
	case f.maxExportConns < 0:
		return fmt.Errorf("--nbd-max-export-conns %d: must be positive", f.maxExportConns)
	}
	return nil
}

// loadTLS loads the certificate and key; nil without a certificate. The
// same configuration serves HTTPS and NBD STARTTLS; TLS 1.2 is the least the
// NBD protocol allows.
func loadTLS(f serverFlags) (*tls.Config, error) {
	if f.tlsCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// loadToken reads the API token, creating the file with a random token
// (mode 0600) when it does not exist.
func loadToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		var b [32]byte
		rand.Read(b[:])
		tok := base64.RawURLEncoding.EncodeToString(b[:])
		fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", fmt.Errorf("token file: %w", err)
		}
		_, err = fh.WriteString(tok + "\n")
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", fmt.Errorf("token file: %w", err)
		}
		return tok, nil
	}
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}

// listenNBD listens on host:port or unix:/path; a stale socket nobody
// answers on is removed first.
func listenNBD(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return listenUnix(path, "nbd listen")
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("nbd listen: %w", err)
	}
	return l, nil
}
