package backup

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/netvol/netvol/errdefs"
	"github.com/netvol/netvol/internal/s3test"
)

// targets returns every kind of target: a directory, and a bucket of a
// real S3 server (versitygw).
func targets(t *testing.T) map[string]Target {
	t.Helper()
	dir, err := OpenDir(filepath.Join(t.TempDir(), "target"))
	if err != nil {
		t.Fatal(err)
	}
	srv := s3test.Start(t, "backups")
	srv.SetEnv(t)
	s3, err := OpenTarget("s3://backups/some/prefix", S3Config{Endpoint: srv.Endpoint, Region: s3test.Region})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]Target{"dir": dir, "s3": s3}
}

// TestTargetConformance runs the same checks against every target, so
// that the directory and the S3 store cannot drift apart.
func TestTargetConformance(t *testing.T) {
	for name, tg := range targets(t) {
		t.Run(name, func(t *testing.T) { conformance(t, tg) })
	}
}

func conformance(t *testing.T, tg Target) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := tg.Get(ctx, "chunks/ab/none", 10); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get of a missing object: %v, want not found", err)
	}
	if ok, err := tg.Exists(ctx, "chunks/ab/none"); ok || err != nil {
		t.Fatalf("Exists of a missing object: %v, %v", ok, err)
	}
	data := bytes.Repeat([]byte("netvol"), 1000)
	for _, k := range []string{"chunks/ab/one", "chunks/cd/two", "backups/v/x.json"} {
		if err := tg.Put(ctx, k, data); err != nil {
			t.Fatalf("Put %s: %v", k, err)
		}
	}
	got, err := tg.Get(ctx, "chunks/ab/one", int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %d bytes, %v", len(got), err)
	}
	if _, err := tg.Get(ctx, "chunks/ab/one", 10); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get over its bound: %v, want corrupt", err)
	}
	if ok, err := tg.Exists(ctx, "chunks/ab/one"); !ok || err != nil {
		t.Fatalf("Exists: %v, %v", ok, err)
	}
	objs, err := tg.List(ctx, "chunks/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
		if o.Size != int64(len(data)) || time.Since(o.Modified) > time.Hour {
			t.Errorf("listed %+v", o)
		}
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"chunks/ab/one", "chunks/cd/two"}) {
		t.Fatalf("List chunks/: %v", keys)
	}
	if err := tg.Delete(ctx, "chunks/ab/one"); err != nil {
		t.Fatal(err)
	}
	if err := tg.Delete(ctx, "chunks/ab/one"); err != nil {
		t.Fatalf("Delete of a missing object: %v", err)
	}
	if ok, _ := tg.Exists(ctx, "chunks/ab/one"); ok {
		t.Fatal("deleted object still exists")
	}
	if err := tg.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "/abs", "a/../b", "a//b"} {
		if err := tg.Put(ctx, bad, data); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Put %q: %v, want invalid", bad, err)
		}
	}
}

func TestOpenTarget(t *testing.T) {
	for _, bad := range []string{"ftp://x/y", "file://host/x", "file:relative", "s3:///prefix", "nothing"} {
		if _, err := OpenTarget(bad, S3Config{}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("OpenTarget(%q): %v, want invalid", bad, err)
		}
	}
	if _, err := OpenTarget("s3://b/p", S3Config{Endpoint: "127.0.0.1:9000"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("endpoint without a scheme: %v, want invalid", err)
	}
	tg, err := OpenTarget("s3://bucket/a/b/", S3Config{Endpoint: "http://127.0.0.1:9"})
	if err != nil || tg.String() != "s3://bucket/a/b/" {
		t.Fatalf("OpenTarget: %v, %v", tg, err)
	}
}
