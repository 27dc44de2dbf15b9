package backup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/errdefs"
)

// dirTarget stores objects as files under a directory (local disk, an NFS
// mount). A file is written under a temporary name (".tmp-*") and renamed
// into place, so it is visible only whole; Sync makes what was put
// durable with one syncfs, and a manifest (the commit point) is synced
// with its directory before Put returns.
type dirTarget struct {
	root string
	made sync.Map // directories known to exist
}

const dirTmp = ".tmp-"

// OpenDir opens (creating) a directory target.
func OpenDir(root string) (Target, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("backup target: %w", err)
	}
	return &dirTarget{root: root}, nil
}

func (d *dirTarget) String() string { return "file://" + d.root }

func (d *dirTarget) path(key string) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(key)), nil
}

func (d *dirTarget) Put(ctx context.Context, key string, data []byte) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if _, ok := d.made.Load(dir); !ok {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("backup target: %w", err)
		}
		d.made.Store(dir, true)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(dir, dirTmp+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrNotExist) { // removed behind our back
		if err = os.MkdirAll(dir, 0o700); err == nil {
			f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
	}
	if err != nil {
		return fmt.Errorf("backup target: %w", err)
	}
	_, err = f.Write(data)
	manifest := strings.HasSuffix(key, ".json")
	if err == nil && manifest {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup target: %w", err)
	}
	if manifest {
		return syncDir(dir)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("backup target: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup target: %w", err)
	}
	return nil
}

func (d *dirTarget) Get(ctx context.Context, key string, max int64) ([]byte, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("backup target: %s: %w", key, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("backup target: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("backup target: %w", err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("backup target: %s: more than %d bytes: %w", key, max, ErrCorrupt)
	}
	return data, nil
}

func (d *dirTarget) Exists(ctx context.Context, key string) (bool, error) {
	p, err := d.path(key)
	if err != nil {
		return false, err
	}
	_, err = os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("backup target: %w", err)
	}
	return true, ctx.Err()
}

func (d *dirTarget) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	start := filepath.Join(d.root, filepath.FromSlash(prefix))
	if !strings.HasSuffix(prefix, "/") {
		start = filepath.Dir(start)
	}
	err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), dirTmp) {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		out = append(out, Object{Key: key, Size: info.Size(), Modified: info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup target: %w", err)
	}
	return out, nil
}

func (d *dirTarget) Delete(ctx context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("backup target: %w", err)
	}
	return ctx.Err()
}

// Sync flushes the target's file system: every chunk written before is
// durable before the manifest that names it is written.
func (d *dirTarget) Sync(ctx context.Context) error {
	f, err := os.Open(d.root)
	if err != nil {
		return fmt.Errorf("backup target: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("backup target: syncfs: %w", err)
	}
	return ctx.Err()
}
