package nfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/willscott/go-nfs-client/nfs"
)

const (
	// archiveDir holds archived volumes. Its leading '.' keeps it out of
	// the volume names, so List never shows it and no volume can be
	// called that.
	archiveDir = ".netvol-archive"
	// archiveStamp is the UTC time in archived names: name-20060102T150405Z.
	archiveStamp = "20060102T150405Z"
	// maxDepth bounds the recursion of a delete.
	maxDepth = 1024
)

// delete removes the volume's directory and all it holds.
func (s *session) delete(ctx context.Context, name string, fh []byte) error {
	if err := s.removeTree(ctx, fh, 0); err != nil {
		return fmt.Errorf("deleting the contents of %s: %w", s.t.source(name), err)
	}
	if err := s.nfs.rmdir(ctx, s.root, name); err != nil {
		return fmt.Errorf("RMDIR %s: %w", s.t.source(name), err)
	}
	return nil
}

// removeTree empties the directory dir, depth first. It goes by the type
// the server reports, so a symbolic link is removed, never followed.
func (s *session) removeTree(ctx context.Context, dir []byte, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("directories nested deeper than %d", maxDepth)
	}
	entries, err := s.nfs.readdirplus(ctx, dir)
	if err != nil {
		return fmt.Errorf("READDIRPLUS: %w", err)
	}
	for _, e := range entries {
		if err := s.removeEntry(ctx, dir, e, depth); err != nil {
			return err
		}
	}
	return nil
}

func (s *session) removeEntry(ctx context.Context, dir []byte, e nfs.EntryPlus, depth int) error {
	name := e.FileName
	if name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("the server listed an entry named %q", name)
	}
	attr, fh := e.Attr.Attr, e.Handle.FH
	if !e.Attr.IsSet || !e.Handle.IsSet {
		var err error
		if fh, attr, err = s.nfs.lookup(ctx, dir, name); err != nil {
			return ignoreGone(name, "LOOKUP", err)
		}
	}
	if attr.Type != nfs.NF3Dir {
		return ignoreGone(name, "REMOVE", s.nfs.remove(ctx, dir, name))
	}
	if err := s.removeTree(ctx, fh, depth+1); err != nil {
		return fmt.Errorf("in %s: %w", name, err)
	}
	return ignoreGone(name, "RMDIR", s.nfs.rmdir(ctx, dir, name))
}

// ignoreGone drops "no such entry" (someone else removed it first) and
// names the entry and the call in any other error.
func ignoreGone(name, call string, err error) error {
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return fmt.Errorf("%s: %s: %w", name, call, err)
}

// archive renames the volume's directory into archiveDir, as
// name-<UTC time>.
func (s *session) archive(ctx context.Context, name string, now time.Time) error {
	dir, err := s.archiveDir(ctx)
	if err != nil {
		return fmt.Errorf("archive directory %s: %w", s.t.source(archiveDir), err)
	}
	to, err := s.freeName(ctx, dir, name+"-"+now.UTC().Format(archiveStamp))
	if err != nil {
		return fmt.Errorf("archive directory %s: %w", s.t.source(archiveDir), err)
	}
	if err := s.nfs.rename(ctx, s.root, name, dir, to); err != nil {
		return fmt.Errorf("RENAME %s to %s/%s: %w", s.t.source(name), s.t.source(archiveDir), to, err)
	}
	return nil
}

// archiveDir makes the archive directory unless it exists. 0700: archived
// data is out of everyone's way but its owner's.
func (s *session) archiveDir(ctx context.Context) ([]byte, error) {
	fh, err := s.nfs.mkdir(ctx, s.root, archiveDir, 0o700)
	if !errors.Is(err, fs.ErrExist) {
		return fh, err
	}
	fh, attr, err := s.nfs.lookup(ctx, s.root, archiveDir)
	if err == nil && attr.Type != nfs.NF3Dir {
		err = fmt.Errorf("it is %s, not a directory", typeName(attr.Type))
	}
	return fh, err
}

// freeName returns base, or base-2, base-3 and so on, whichever is free
// first: RENAME would silently replace an empty directory of that name.
func (s *session) freeName(ctx context.Context, dir []byte, base string) (string, error) {
	for i := 1; i <= 100; i++ {
		n := base
		if i > 1 {
			n = fmt.Sprintf("%s-%d", base, i)
		}
		_, _, err := s.nfs.lookup(ctx, dir, n)
		if errors.Is(err, fs.ErrNotExist) {
			return n, nil
		}
		if err != nil {
			return "", fmt.Errorf("LOOKUP %s: %w", n, err)
		}
	}
	return "", fmt.Errorf("100 archived copies named %s-* already", base)
}
