package nfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"

	"github.com/willscott/go-nfs-client/nfs"

	"github.com/netvol/netvol/volume/backend"
)

// A volume's stored options (backend.Options.Stored) live in a small file
// beside its directory, .netvol.<name>.json, which every host reads. Its
// leading '.' keeps it out of the volume names, as the archive is. It is
// made with the same credentials and in the same directory as the volume,
// so a host that may create a volume may also store its options.

const (
	storedPrefix = ".netvol."
	storedSuffix = ".json"
	// maxStored bounds the file: a few options take well under 1 KiB.
	maxStored = 4 << 10
	// storedVersion is the file's format.
	storedVersion = 1
)

// storedName is the file that keeps name's options.
func storedName(name string) string { return storedPrefix + name + storedSuffix }

type storedFile struct {
	V       int               `json:"v"`
	Options map[string]string `json:"options"`
}

// writeStored keeps opts beside the volume's directory, readable by all.
func (s *session) writeStored(ctx context.Context, name string, opts map[string]string) error {
	data, err := json.Marshal(storedFile{V: storedVersion, Options: opts})
	if err != nil {
		return err
	}
	if len(data) > maxStored {
		return fmt.Errorf("the volume's options take %d bytes, more than %d: %w", len(data), maxStored, backend.ErrInvalid)
	}
	fh, err := s.nfs.createFile(ctx, s.root, storedName(name), 0o644)
	if err == nil {
		err = s.nfs.write(ctx, fh, data)
	}
	if err != nil {
		return fmt.Errorf("storing the options in %s: %w", s.t.source(storedName(name)), err)
	}
	return nil
}

// readStored reads the options kept beside the volume's directory, nil
// when there is no such file (a volume made before options were stored).
// The driver checks what it returns before any use.
func (s *session) readStored(ctx context.Context, name string) (map[string]string, error) {
	path := s.t.source(storedName(name))
	fh, attr, err := s.nfs.lookup(ctx, s.root, storedName(name))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("LOOKUP %s: %w", path, err)
	case attr.Type != nfs.NF3Reg:
		return nil, fmt.Errorf("%s is %s, not a file of options: %w", path, typeName(attr.Type), backend.ErrInvalid)
	case attr.Filesize > maxStored:
		return nil, fmt.Errorf("%s holds %d bytes, more than the %d a volume's options take: %w", path, attr.Filesize, maxStored, backend.ErrInvalid)
	}
	data, err := s.nfs.read(ctx, fh, maxStored+1)
	if err != nil {
		return nil, fmt.Errorf("READ %s: %w", path, err)
	}
	var f storedFile
	if len(data) > maxStored {
		err = fmt.Errorf("more than %d bytes", maxStored)
	} else if err = json.Unmarshal(data, &f); err == nil && f.V != storedVersion {
		err = fmt.Errorf("format version %d, want %d", f.V, storedVersion)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, err, backend.ErrInvalid)
	}
	return f.Options, nil
}

// removeStored removes the options kept beside the volume's directory;
// none there is fine.
func (s *session) removeStored(ctx context.Context, name string) error {
	return ignoreGone(s.t.source(storedName(name)), "REMOVE", s.nfs.remove(ctx, s.root, storedName(name)))
}
