package backup

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/netvol/netvol/errdefs"
)

// ErrCorrupt is errdefs.ErrCorrupt: a chunk, index or manifest that is
// missing or fails its checksum.
var ErrCorrupt = errdefs.ErrCorrupt

// Target is where backups are stored: a directory or an S3 bucket.
// Keys are slash-separated paths under the target's prefix. Every call
// honours its context's deadline.
type Target interface {
	// Put stores data under key; the object is visible only whole.
	Put(ctx context.Context, key string, data []byte) error
	// Get reads an object of at most max bytes (errdefs.ErrNotFound when
	// there is none).
	Get(ctx context.Context, key string, max int64) ([]byte, error)
	// Exists reports whether an object is there.
	Exists(ctx context.Context, key string) (bool, error)
	// List returns the objects whose keys start with prefix.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Delete removes an object; none is no error.
	Delete(ctx context.Context, key string) error
	// Sync makes every object put before durable (a directory's file
	// system); objects of an S3 store are durable when Put returns.
	Sync(ctx context.Context) error
	// String names the target for logs and answers, without credentials.
	String() string
}

// Object is a listed object.
type Object struct {
	Key      string
	Size     int64
	Modified time.Time
}

// S3Config is how to reach an S3 store: the endpoint (NETVOL_S3_ENDPOINT,
// "http(s)://host:port"; empty means AWS) and the region (AWS_REGION).
// Credentials are never part of it: they come from the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or the
// shared credentials file (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE).
type S3Config struct {
	Endpoint string
	Region   string
}

// OpenTarget opens the target a --backup-target URL names:
// file:///path (a directory, created if missing) or s3://bucket/prefix.
func OpenTarget(raw string, s3cfg S3Config) (Target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("backup target %q: %v: %w", raw, err, errdefs.ErrInvalid)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" || !path.IsAbs(u.Path) {
			return nil, fmt.Errorf("backup target %q: want file:///absolute/path: %w", raw, errdefs.ErrInvalid)
		}
		return OpenDir(path.Clean(u.Path))
	case "s3":
		if u.Host == "" {
			return nil, fmt.Errorf("backup target %q: want s3://bucket/prefix: %w", raw, errdefs.ErrInvalid)
		}
		return OpenS3(u.Host, strings.Trim(u.Path, "/"), s3cfg)
	}
	return nil, fmt.Errorf("backup target %q: want file:///path or s3://bucket/prefix: %w", raw, errdefs.ErrInvalid)
}

// checkKey refuses keys that could leave the target.
func checkKey(key string) error {
	if key == "" || strings.HasPrefix(key, "/") || strings.Contains(key, "..") || strings.Contains(key, "//") {
		return fmt.Errorf("backup target: bad key %q: %w", key, errdefs.ErrInvalid)
	}
	return nil
}
