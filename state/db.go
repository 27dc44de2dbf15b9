package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// DefaultTimeout is how long Open waits for the file lock before it gives
// up with ErrLocked.
const DefaultTimeout = time.Second

// Option configures OpenRegistry and OpenNodeStore.
type Option func(*options)

type options struct {
	timeout time.Duration
}

// WithTimeout sets how long to wait for another holder of the database to
// let go before failing with ErrLocked. Zero or less means DefaultTimeout.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// store is the bbolt handle and schema bookkeeping shared by both stores.
type store struct {
	db   *bolt.DB
	path string
}

// open opens (creating if needed) the database at path, checks that it
// holds the given kind of schema and runs pending migrations.
func open(path string, s schema, opts []Option) (*store, error) {
	o := options{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.timeout <= 0 {
		o.timeout = DefaultTimeout
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.timeout})
	if err != nil {
		return nil, openError(path, o.timeout, err)
	}
	if err := migrate(db, s); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &store{db: db, path: path}, nil
}

// openError explains why bolt.Open failed.
func openError(path string, timeout time.Duration, err error) error {
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("open %s: %w (gave up after %s)", path, ErrLocked, timeout)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch),
		errors.Is(err, bolterrors.ErrChecksum):
		return fmt.Errorf("open %s: not a bbolt database (%v): %w", path, err, ErrSchema)
	}
	return fmt.Errorf("open %s: %w", path, err)
}

// Close releases the database and its file lock.
func (s *store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close %s: %w", s.path, err)
	}
	return nil
}

// Path returns the database file's path.
func (s *store) Path() string { return s.path }

// view runs fn in a read transaction on the top (v1) bucket.
func (s *store) view(fn func(root *bolt.Bucket) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return fn(tx.Bucket(keyV1))
	})
}

// update runs fn in one write transaction on the top (v1) bucket: fn's
// changes are committed together or not at all.
func (s *store) update(fn func(root *bolt.Bucket) error) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return fn(tx.Bucket(keyV1))
	})
}

// key turns a caller's name into a bucket key. Names are opaque to the
// store; it only refuses what it cannot store as a key. Every name is a
// whole key of its own (never joined with another), so '/' or any other
// byte in a name cannot reach another entry.
func key(what, name string) ([]byte, error) {
	if name == "" {
		return nil, fmt.Errorf("empty %s name: %w", what, ErrInvalid)
	}
	if len(name) > bolt.MaxKeySize {
		return nil, fmt.Errorf("%s name of %d bytes is longer than %d: %w",
			what, len(name), bolt.MaxKeySize, ErrInvalid)
	}
	return []byte(name), nil
}

// putJSON stores v as JSON under k.
func putJSON(b *bolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, data)
}

// getJSON decodes the JSON under k into v; false when k is absent.
func getJSON(b *bolt.Bucket, k []byte, v any) (bool, error) {
	data := b.Get(k)
	if data == nil {
		return false, nil
	}
	return true, decodeJSON(k, data, v)
}

// decodeJSON decodes the value data of key k into v.
func decodeJSON(k, data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode entry %q: %w", k, err)
	}
	return nil
}

func encodeUint(n uint64) []byte { return []byte(strconv.FormatUint(n, 10)) }

func decodeUint(b []byte) (uint64, error) {
	if b == nil {
		return 0, nil
	}
	return strconv.ParseUint(string(b), 10, 64)
}
