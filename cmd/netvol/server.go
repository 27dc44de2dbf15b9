package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/netvol/netvol/server"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/server/backup"
)

// defaultMaxVolumeSize is the largest volume a storage daemon accepts by
// default, netvol server's and netvol run's alike (server.DefaultMaxVolumeSize).
const defaultMaxVolumeSize = "1T"

// serverFlags are the storage daemon's settings; each has an environment twin.
type serverFlags struct {
	data, nbdListen, apiListen, tokenFile, maxSize, logLevel string
	tlsCert, tlsKey                                          string
	listExports, tlsRequired                                 bool
	leaseTTL                                                 time.Duration
	// NBD limits; zero means the nbd.Server default.
	handshakeTimeout, replyTimeout time.Duration
	maxHandshakes, maxExportConns  int
	// Backups: the target URL, the S3 endpoint, the default schedule.
	backupTarget, s3Endpoint string
	backupEvery              time.Duration
	backupKeep               int
	// Pool placement: a share of new volumes, or none (draining).
	weight       float64
	noNewVolumes bool
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
	cmd.AddCommand(newDrainCommand())
	fl := cmd.Flags()
	fl.StringVar(&f.data, "data", os.Getenv("NETVOL_DATA"), "data directory: registry and images (required) [NETVOL_DATA]")
	fl.StringVar(&f.nbdListen, "nbd-listen", envOr("NETVOL_NBD_LISTEN", "127.0.0.1:10809"), "NBD address: host:port or unix:/path [NETVOL_NBD_LISTEN]")
	fl.StringVar(&f.apiListen, "api-listen", envOr("NETVOL_API_LISTEN", "127.0.0.1:10810"), "control API address host:port [NETVOL_API_LISTEN]")
	fl.StringVar(&f.tokenFile, "token-file", os.Getenv("NETVOL_TOKEN_FILE"), "bearer token of the API; created (mode 0600) with a random token if missing (default <data>/token) [NETVOL_TOKEN_FILE]")
	fl.BoolVar(&f.listExports, "list-exports", envBool("NETVOL_LIST_EXPORTS"), "answer NBD_OPT_LIST with the volume names [NETVOL_LIST_EXPORTS]")
	fl.StringVar(&f.maxSize, "max-volume-size", envOr("NETVOL_MAX_VOLUME_SIZE", defaultMaxVolumeSize), "largest volume size accepted [NETVOL_MAX_VOLUME_SIZE]")
	fl.DurationVar(&f.leaseTTL, "lease-ttl", envDuration("NETVOL_LEASE_TTL", server.DefaultLeaseTTL), "attachment lease duration [NETVOL_LEASE_TTL]")
	fl.StringVar(&f.tlsCert, "tls-cert", os.Getenv("NETVOL_TLS_CERT"), "PEM certificate (chain) for HTTPS and NBD STARTTLS; needs --tls-key [NETVOL_TLS_CERT]")
	fl.StringVar(&f.tlsKey, "tls-key", os.Getenv("NETVOL_TLS_KEY"), "PEM private key of --tls-cert [NETVOL_TLS_KEY]")
	fl.BoolVar(&f.tlsRequired, "tls-required", envBool("NETVOL_TLS_REQUIRED"), "refuse NBD clients that do not upgrade with STARTTLS; needs --tls-cert [NETVOL_TLS_REQUIRED]")
	fl.DurationVar(&f.handshakeTimeout, "nbd-handshake-timeout", envDuration("NETVOL_NBD_HANDSHAKE_TIMEOUT", 30*time.Second), "deadline of an NBD handshake, reads and writes, from accept to transmission [NETVOL_NBD_HANDSHAKE_TIMEOUT]")
	fl.IntVar(&f.maxHandshakes, "nbd-max-handshakes", envIntOr("NETVOL_NBD_MAX_HANDSHAKES", 64), "NBD connections in the handshake at once; more wait to be accepted [NETVOL_NBD_MAX_HANDSHAKES]")
	fl.IntVar(&f.maxExportConns, "nbd-max-export-conns", envIntOr("NETVOL_NBD_MAX_EXPORT_CONNS", 16), "NBD connections to one export at once; more are refused [NETVOL_NBD_MAX_EXPORT_CONNS]")
	fl.DurationVar(&f.replyTimeout, "nbd-reply-timeout", envDuration("NETVOL_NBD_REPLY_TIMEOUT", 2*time.Minute), "time an NBD reply may take to go out before the connection is closed [NETVOL_NBD_REPLY_TIMEOUT]")
	addBackupFlags(cmd, &f)
	fl.StringVar(&f.logLevel, "log-level", envOr("NETVOL_LOG_LEVEL", "info"), "debug, info, warn or error [NETVOL_LOG_LEVEL]")
	fl.Float64Var(&f.weight, "weight", envFloatOr("NETVOL_WEIGHT", 1), "in a pool of servers, scales this server's share of new volumes (placement weighs free space by it) [NETVOL_WEIGHT]")
	fl.BoolVar(&f.noNewVolumes, "no-new-volumes", envBool("NETVOL_NO_NEW_VOLUMES"), "refuse new volumes (a server being drained: placement skips it) [NETVOL_NO_NEW_VOLUMES]")
	return cmd
}

// addBackupFlags adds the backup target and the default schedule. S3
// credentials are never flags: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
// (or AWS_SHARED_CREDENTIALS_FILE) and AWS_REGION come from the
// environment.
func addBackupFlags(cmd *cobra.Command, f *serverFlags) {
	fl := cmd.Flags()
	fl.StringVar(&f.backupTarget, "backup-target", os.Getenv("NETVOL_BACKUP_TARGET"), "where backups go: file:///path or s3://bucket/prefix (S3 credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_SHARED_CREDENTIALS_FILE; region AWS_REGION) [NETVOL_BACKUP_TARGET]")
	fl.StringVar(&f.s3Endpoint, "s3-endpoint", os.Getenv("NETVOL_S3_ENDPOINT"), "S3 endpoint of an s3:// backup target, http(s)://host:port (default AWS) [NETVOL_S3_ENDPOINT]")
	fl.DurationVar(&f.backupEvery, "backup-every", envDuration("NETVOL_BACKUP_EVERY", 0), "back up every volume this often unless its label netvol.backup-every says otherwise; 0: only volumes that ask [NETVOL_BACKUP_EVERY]")
	fl.IntVar(&f.backupKeep, "backup-keep", envIntOr("NETVOL_BACKUP_KEEP", 0), "keep this many newest backups of a scheduled volume unless its label netvol.backup-keep says otherwise; 0 keeps all [NETVOL_BACKUP_KEEP]")
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
	return d.Serve(ctx)
}

// startServer checks the flags and starts the storage daemon they describe.
func startServer(f serverFlags) (*server.Daemon, error) {
	log, maxSize, err := checkServerFlags(&f)
	if err != nil {
		return nil, err
	}
	return server.Start(server.DaemonConfig{DataDir: f.data, NBDListen: f.nbdListen, APIListen: f.apiListen,
		TokenFile: f.tokenFile, MaxVolumeSize: maxSize, LeaseTTL: f.leaseTTL, ListExports: f.listExports,
		TLSCert: f.tlsCert, TLSKey: f.tlsKey, TLSRequired: f.tlsRequired,
		HandshakeTimeout: f.handshakeTimeout, ReplyTimeout: f.replyTimeout,
		MaxHandshakes: f.maxHandshakes, MaxExportConns: f.maxExportConns, Log: log,
		BackupTarget: f.backupTarget, S3: backup.S3Config{Endpoint: f.s3Endpoint, Region: os.Getenv("AWS_REGION")},
		BackupSchedule: server.Schedule{Every: f.backupEvery, Keep: f.backupKeep},
		Weight:         f.weight, NoNewVolumes: f.noNewVolumes})
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
	maxSize, err := api.ParseSize(f.maxSize)
	if err != nil {
		return nil, 0, fmt.Errorf("--max-volume-size: %w", err)
	}
	if f.leaseTTL <= 0 {
		return nil, 0, fmt.Errorf("--lease-ttl %s: must be positive", f.leaseTTL)
	}
	if err := checkNBDLimits(f); err != nil {
		return nil, 0, err
	}
	if f.weight == 0 {
		f.weight = 1 // only from code: the flag has a default
	}
	if !(f.weight > 0 && f.weight <= 1e6) {
		return nil, 0, fmt.Errorf("--weight %v: want a number above 0 (1 is the default share), at most 1e6", f.weight)
	}
	switch {
	case f.backupEvery < 0:
		return nil, 0, fmt.Errorf("--backup-every %s: must not be negative", f.backupEvery)
	case f.backupKeep < 0:
		return nil, 0, fmt.Errorf("--backup-keep %d: must not be negative", f.backupKeep)
	case (f.backupEvery > 0 || f.s3Endpoint != "") && f.backupTarget == "":
		return nil, 0, errors.New("--backup-every and --s3-endpoint need --backup-target (NETVOL_BACKUP_TARGET)")
	}
	switch {
	case f.tlsCert == "" && f.tlsKey != "":
		return nil, 0, errors.New("--tls-key (NETVOL_TLS_KEY) needs --tls-cert (NETVOL_TLS_CERT)")
	case f.tlsCert != "" && f.tlsKey == "":
		return nil, 0, errors.New("--tls-cert (NETVOL_TLS_CERT) needs --tls-key (NETVOL_TLS_KEY)")
	case f.tlsRequired && f.tlsCert == "":
		return nil, 0, errors.New("--tls-required (NETVOL_TLS_REQUIRED) needs a certificate: give --tls-cert and --tls-key")
	}
	return log, maxSize, nil
}

// checkNBDLimits refuses negative limits; zero (only from code: the flags
// have defaults) is the nbd.Server default.
// envFloatOr is the number in environment variable key, else def.
func envFloatOr(key string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(key), 64); err == nil {
		return v
	}
	return def
}

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
