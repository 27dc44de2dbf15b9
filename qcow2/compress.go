package qcow2

import (
	"bytes"
	"compress/flate"
	"io"

	"github.com/klauspost/compress/zstd"
)

// decompress returns the guest data of a compressed cluster.
func (img *Image) decompress(e uint64) ([]byte, error) {
	off, n := img.compressedRange(e)
	fs := img.fileSize.Load()
	if int64(off) >= fs {
		return nil, img.corrupt("L2 table", "compressed cluster at %#x lies beyond the end of the file", off)
	}
	n = min(n, fs-int64(off))
	src := make([]byte, n)
	if _, err := img.f.ReadAt(src, int64(off)); err != nil && err != io.EOF {
		return nil, err
	}
	dst := make([]byte, img.clusterSize)
	var r io.Reader
	switch img.hdr.compressionType {
	case compressionZstd:
		d, err := zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(4*img.clusterSize)))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		r = d
	default:
		fr := flate.NewReader(bytes.NewReader(src))
		defer fr.Close()
		r = fr
	}
	if _, err := io.ReadFull(r, dst); err != nil {
		return nil, img.corrupt("compressed cluster", "data at %#x does not decompress to a cluster: %v", off, err)
	}
	return dst, nil
}
