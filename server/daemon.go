package server

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
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/internal/metrics"
	"github.com/netvol/netvol/internal/sockets"
	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/server/backup"
)

// DaemonConfig is a whole storage daemon: the Service, the NBD server and
// the control API, as netvol server's flags set them.
type DaemonConfig struct {
	DataDir       string // required; created (0700) if missing
	NBDListen     string // host:port or unix:/path
	APIListen     string // host:port
	TokenFile     string // "" means <DataDir>/token; created (0600) with a random token if missing
	MaxVolumeSize int64  // 0 means DefaultMaxVolumeSize
	LeaseTTL      time.Duration
	ListExports   bool // answer NBD_OPT_LIST with the volume names
	// TLS: a certificate and key serve HTTPS and offer NBD STARTTLS;
	// TLSRequired refuses NBD clients that do not upgrade.
	TLSCert, TLSKey string
	TLSRequired     bool
	// NBD limits; zero means the nbd.Server default.
	HandshakeTimeout, ReplyTimeout time.Duration
	MaxHandshakes, MaxExportConns  int
	// BackupTarget is where backups go: file:///path or s3://bucket/prefix
	// ("" for none: backup calls are refused). S3 is reached at S3's
	// endpoint and region, with credentials from the environment or the
	// shared credentials file (never from here).
	BackupTarget string
	S3           backup.S3Config
	// BackupSchedule is the default of volumes that have no schedule of
	// their own (labels); BackupTimeout bounds a backup or restore call.
	BackupSchedule Schedule
	BackupTimeout  time.Duration
	Log            logrus.FieldLogger // required
	// Pool placement (Config.Weight, Config.NoNewVolumes).
	Weight       float64
	NoNewVolumes bool
}

// scheduleTick is how often the backup schedule looks for due volumes.
const scheduleTick = time.Minute

// Daemon is a storage daemon whose listeners are open: clients can connect
// before Serve runs.
type Daemon struct {
	log    logrus.FieldLogger
	svc    *Service
	nbdSrv *nbd.Server
	nbdL   net.Listener
	apiSrv *http.Server
	apiL   net.Listener
	token  string
	sched  Schedule
}

// Run starts a storage daemon and serves until ctx ends or a signal comes.
func Run(ctx context.Context, cfg DaemonConfig) error {
	d, err := Start(cfg)
	if err != nil {
		return err
	}
	return d.Serve(ctx)
}

// Start opens the registry, the token and the listeners.
func Start(cfg DaemonConfig) (*Daemon, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("storage daemon: no data directory")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	if cfg.TokenFile == "" {
		cfg.TokenFile = filepath.Join(cfg.DataDir, "token")
	}
	tlsCfg, err := loadTLS(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, err
	}
	token, err := LoadToken(cfg.TokenFile)
	if err != nil {
		return nil, err
	}
	log := cfg.Log
	var engine *backup.Engine
	if cfg.BackupTarget != "" {
		tg, err := backup.OpenTarget(cfg.BackupTarget, cfg.S3)
		if err != nil {
			return nil, fmt.Errorf("--backup-target: %w", err)
		}
		engine = backup.NewEngine(tg, backup.EngineOptions{})
	}
	svc, err := Open(Config{DataDir: cfg.DataDir, MaxVolumeSize: cfg.MaxVolumeSize, LeaseTTL: cfg.LeaseTTL, Log: log, Backups: engine,
		Weight: cfg.Weight, NoNewVolumes: cfg.NoNewVolumes})
	if err != nil {
		return nil, err
	}
	nbdL, err := listenNBD(cfg.NBDListen)
	if err != nil {
		svc.Close()
		return nil, err
	}
	apiL, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		nbdL.Close()
		svc.Close()
		return nil, fmt.Errorf("api listen: %w", err)
	}
	d := &Daemon{log: log, svc: svc, nbdL: nbdL, apiL: apiL, token: token, sched: cfg.BackupSchedule,
		nbdSrv: &nbd.Server{Exports: svc, ListExports: cfg.ListExports, Logger: log.WithField("component", "nbd"),
			HandshakeTimeout: cfg.HandshakeTimeout, MaxHandshakes: cfg.MaxHandshakes,
			MaxExportConns: cfg.MaxExportConns, ReplyTimeout: cfg.ReplyTimeout},
	}
	reg := metrics.NewRegistry(metrics.NewNBDCollector(d.nbdSrv.Stats), metrics.NewDaemonCollector(daemonStats(svc)),
		metrics.NewBackupCollector(backupMetrics(svc)))
	d.apiSrv = &http.Server{Handler: NewAPI(svc, token, log.WithField("component", "api"),
		WithNBDAddr(nbdL.Addr()), WithMetrics(metrics.Handler(reg)), WithBackupTimeout(cfg.BackupTimeout)),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	if tlsCfg != nil {
		d.nbdSrv.TLSConfig, d.nbdSrv.TLSRequired = tlsCfg.Clone(), cfg.TLSRequired
		d.apiSrv.TLSConfig = tlsCfg.Clone() // ServeTLS adds h2 to NextProtos
	}
	if err := writeAPIAddress(cfg.DataDir, apiL.Addr(), tlsCfg != nil); err != nil {
		log.WithError(err).Warn("could not record the API address for the operator commands on this host")
	}
	log.WithFields(logrus.Fields{"data": cfg.DataDir, "nbd": nbdL.Addr().String(), "api": apiL.Addr().String(),
		"tls": tlsCfg != nil, "tls_required": cfg.TLSRequired,
		"lease_ttl": cfg.LeaseTTL, "max_volume_size": svc.cfg.MaxVolumeSize, "backup_target": targetName(engine),
		"backup_every": cfg.BackupSchedule.Every, "backup_keep": cfg.BackupSchedule.Keep,
		"weight": cfg.Weight, "no_new_volumes": cfg.NoNewVolumes}).Info("netvol server started")
	return d, nil
}

func writeAPIAddress(dataDir string, addr net.Addr, tls bool) error {
	scheme := "http://"
	if tls {
		scheme = "https://"
	}
	return os.WriteFile(filepath.Join(dataDir, api.AddressFile), []byte(scheme+addr.String()+"\n"), 0o644)
}

// APIAddr is the address the control API listens on.
func (d *Daemon) APIAddr() net.Addr { return d.apiL.Addr() }

// Token is the control API's bearer token.
func (d *Daemon) Token() string { return d.token }

// daemonStats reads what the metrics show of the registry.
func daemonStats(svc *Service) func() (metrics.DaemonStats, error) {
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

// targetName names the backup target for the log (no credentials).
func targetName(e *backup.Engine) string {
	if e == nil {
		return ""
	}
	return e.Target().String()
}

// backupMetrics reads the service's backup counts for the metrics.
func backupMetrics(svc *Service) func() map[string]metrics.VolumeBackups {
	return func() map[string]metrics.VolumeBackups {
		out := map[string]metrics.VolumeBackups{}
		for vol, st := range svc.BackupStats() {
			out[vol] = metrics.VolumeBackups{LastSuccess: st.LastSuccess, LastData: st.LastData, LastStored: st.LastStored,
				Successes: st.Successes, Failures: st.Failures}
		}
		return out
	}
}

// Serve runs both servers until a signal or a listener failure, then shuts
// down in order: NBD (requests in flight finish), API, images, registry.
func (d *Daemon) Serve(ctx context.Context) error {
	log, svc, nbdSrv, nbdL, apiSrv, apiL := d.log, d.svc, d.nbdSrv, d.nbdL, d.apiSrv, d.apiL
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	failed := make(chan error, 2)
	schedCtx, stopSched := context.WithCancel(ctx)
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		svc.RunBackupSchedule(schedCtx, d.sched, scheduleTick)
	}()
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
	stopSched()
	<-schedDone // a scheduled backup in flight ends (failed: its snapshot merged away)
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

// loadTLS loads the certificate and key; nil without a certificate. The
// same configuration serves HTTPS and NBD STARTTLS; TLS 1.2 is the least the
// NBD protocol allows.
func loadTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// LoadToken reads the API token, creating the file with a random token
// (mode 0600) when it does not exist.
func LoadToken(path string) (string, error) {
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
		return sockets.ListenUnix(path, "nbd listen")
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("nbd listen: %w", err)
	}
	return l, nil
}
