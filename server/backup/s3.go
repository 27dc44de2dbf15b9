package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/netvol/netvol/errdefs"
)

// s3Target stores objects in an S3 bucket under a prefix, through
// minio-go (signing, retries, multipart are its). A PUT is atomic: an
// object is visible whole or not at all, so the manifest is one PUT.
type s3Target struct {
	c      *minio.Client
	bucket string
	prefix string // "" or ending in "/"
	name   string
}

// OpenS3 opens bucket (which must exist) under prefix. Credentials come
// from the environment or the shared credentials file (see S3Config),
// never from arguments.
func OpenS3(bucket, prefix string, cfg S3Config) (Target, error) {
	endpoint, secure := "s3.amazonaws.com", true
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
			return nil, fmt.Errorf("S3 endpoint %q: want http(s)://host[:port]: %w", cfg.Endpoint, errdefs.ErrInvalid)
		}
		endpoint, secure = u.Host, u.Scheme == "https"
	}
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	creds := credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.FileAWSCredentials{}})
	c, err := minio.New(endpoint, &minio.Options{Creds: creds, Secure: secure, Region: region, BucketLookup: minio.BucketLookupPath})
	if err != nil {
		return nil, fmt.Errorf("S3 target: %w", err)
	}
	if prefix != "" {
		prefix += "/"
	}
	return &s3Target{c: c, bucket: bucket, prefix: prefix, name: "s3://" + bucket + "/" + prefix}, nil
}

func (s *s3Target) String() string { return s.name }

func (s *s3Target) key(key string) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	return s.prefix + key, nil
}

func (s *s3Target) fail(op, key string, err error) error {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && (resp.Code == "NoSuchKey" || resp.StatusCode == 404) {
		return fmt.Errorf("backup target %s: %s %s: %w", s.name, op, key, errdefs.ErrNotFound)
	}
	return fmt.Errorf("backup target %s: %s %s: %v: %w", s.name, op, key, err, errdefs.ErrUnavailable)
}

func (s *s3Target) Put(ctx context.Context, key string, data []byte) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	_, err = s.c.PutObject(ctx, s.bucket, k, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true})
	if err != nil {
		return s.fail("put", key, err)
	}
	return nil
}

func (s *s3Target) Get(ctx context.Context, key string, max int64) ([]byte, error) {
	k, err := s.key(key)
	if err != nil {
		return nil, err
	}
	obj, err := s.c.GetObject(ctx, s.bucket, k, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.fail("get", key, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(io.LimitReader(obj, max+1))
	if err != nil {
		return nil, s.fail("get", key, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("backup target %s: %s: more than %d bytes: %w", s.name, key, max, ErrCorrupt)
	}
	return data, nil
}

func (s *s3Target) Exists(ctx context.Context, key string) (bool, error) {
	k, err := s.key(key)
	if err != nil {
		return false, err
	}
	_, err = s.c.StatObject(ctx, s.bucket, k, minio.StatObjectOptions{})
	if err == nil {
		return true, nil
	}
	if err = s.fail("stat", key, err); errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	return false, err
}

func (s *s3Target) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, s.fail("list", prefix, o.Err)
		}
		out = append(out, Object{Key: strings.TrimPrefix(o.Key, s.prefix), Size: o.Size, Modified: o.LastModified})
	}
	return out, ctx.Err()
}

func (s *s3Target) Delete(ctx context.Context, key string) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	if err := s.c.RemoveObject(ctx, s.bucket, k, minio.RemoveObjectOptions{}); err != nil {
		if err = s.fail("delete", key, err); !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
	}
	return nil
}

func (s *s3Target) Sync(context.Context) error { return nil }
