package qcow2

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// On-disk constants from QEMU's docs/interop/qcow2.txt.
const (
	magic = 0x514649fb // "QFI\xfb"

	headerV2Length = 72
	headerV3Length = 104
	// headerLength is what Create writes: v3 plus the compression type byte,
	// padded to a multiple of 8.
	headerLength = 112

	minClusterBits = 9
	maxClusterBits = 21

	maxBackingNameLen = 1023
	maxBackingDepth   = 64

	// Incompatible feature bits.
	incompatDirty        = 1 << 0
	incompatCorrupt      = 1 << 1
	incompatExternalData = 1 << 2
	incompatCompression  = 1 << 3
	incompatExtendedL2   = 1 << 4
	incompatKnown        = incompatDirty | incompatCorrupt | incompatExternalData | incompatCompression | incompatExtendedL2

	// Autoclear feature bits.
	autoclearRawExternal = 1 << 1

	compressionZlib = 0
	compressionZstd = 1

	// Header extension types.
	extEnd            = 0x00000000
	extBackingFormat  = 0xe2792aca
	extFeatureNames   = 0x6803f857
	extBitmaps        = 0x23852875
	extEncryption     = 0x0537be77
	extExternalDataFn = 0x44415441

	// Table entry bits.
	entryCopied     = uint64(1) << 63
	entryCompressed = uint64(1) << 62
	entryZero       = uint64(1) << 0
	offsetMask      = uint64(0x00fffffffffffe00) // bits 9-55

	// Offsets of header fields written after creation.
	offIncompatible = 72
)

// header is the decoded qcow2 header plus its extensions.
type header struct {
	version             uint32
	backingFileOffset   uint64
	backingFileSize     uint32
	clusterBits         uint32
	size                uint64
	cryptMethod         uint32
	l1Size              uint32
	l1TableOffset       uint64
	refcountTableOffset uint64
	refcountTableCls    uint32
	nbSnapshots         uint32
	snapshotsOffset     uint64
	incompatible        uint64
	compatible          uint64
	autoclear           uint64
	refcountOrder       uint32
	headerLength        uint32
	compressionType     uint8

	backingFile   string
	backingFormat string
	featureNames  map[[2]byte]string // (type, bit) → name, from the feature name table
}

func (h *header) clusterSize() int64 { return 1 << h.clusterBits }

// parseHeader decodes and validates the header in buf, which holds the first
// cluster of the file (or the whole file if shorter). fileSize bounds every
// offset the header names.
func parseHeader(path string, buf []byte, fileSize int64) (*header, error) {
	bad := func(field, format string, args ...any) error {
		return &FormatError{Path: path, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if len(buf) < headerV2Length {
		return nil, bad("header", "file is %d bytes, shorter than a qcow2 header", len(buf))
	}
	be := binary.BigEndian
	if m := be.Uint32(buf[0:]); m != magic {
		return nil, bad("magic", "%#08x is not the qcow2 magic (not a qcow2 image)", m)
	}
	h := &header{
		version:             be.Uint32(buf[4:]),
		backingFileOffset:   be.Uint64(buf[8:]),
		backingFileSize:     be.Uint32(buf[16:]),
		clusterBits:         be.Uint32(buf[20:]),
		size:                be.Uint64(buf[24:]),
		cryptMethod:         be.Uint32(buf[32:]),
		l1Size:              be.Uint32(buf[36:]),
		l1TableOffset:       be.Uint64(buf[40:]),
		refcountTableOffset: be.Uint64(buf[48:]),
		refcountTableCls:    be.Uint32(buf[56:]),
		nbSnapshots:         be.Uint32(buf[60:]),
		snapshotsOffset:     be.Uint64(buf[64:]),
		refcountOrder:       4,
		headerLength:        headerV2Length,
	}
	switch h.version {
	case 2:
	case 3:
		if len(buf) < headerV3Length {
			return nil, bad("header", "truncated version 3 header")
		}
		h.incompatible = be.Uint64(buf[72:])
		h.compatible = be.Uint64(buf[80:])
		h.autoclear = be.Uint64(buf[88:])
		h.refcountOrder = be.Uint32(buf[96:])
		h.headerLength = be.Uint32(buf[100:])
		if h.headerLength < headerV3Length || h.headerLength%8 != 0 || int(h.headerLength) > len(buf) {
			return nil, bad("header_length", "%d (must be a multiple of 8, at least %d, within the first cluster)", h.headerLength, headerV3Length)
		}
		if h.headerLength > 104 {
			h.compressionType = buf[104]
		}
	default:
		return nil, bad("version", "%d (supported: 2, 3)", h.version)
	}
	// The header, its extensions and the backing file name live in the first
	// cluster; buf may hold more.
	if h.clusterBits <= maxClusterBits && len(buf) > 1<<h.clusterBits {
		buf = buf[:1<<h.clusterBits]
	}
	if err := h.validate(path, len(buf), fileSize); err != nil {
		return nil, err
	}
	if err := h.parseExtensions(path, buf); err != nil {
		return nil, err
	}
	if err := h.parseBackingName(path, buf); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *header) validate(path string, bufLen int, fileSize int64) error {
	bad := func(field, format string, args ...any) error {
		return &FormatError{Path: path, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if h.clusterBits < minClusterBits || h.clusterBits > maxClusterBits {
		return bad("cluster_bits", "%d (supported: %d to %d)", h.clusterBits, minClusterBits, maxClusterBits)
	}
	if h.refcountOrder > 6 {
		return bad("refcount_order", "%d (at most 6)", h.refcountOrder)
	}
	if h.cryptMethod != 0 {
		return &UnsupportedError{Path: path, Feature: fmt.Sprintf("encryption (crypt_method %d)", h.cryptMethod)}
	}
	if err := h.checkFeatures(path); err != nil {
		return err
	}
	cs := uint64(h.clusterSize())
	if h.size > uint64(maxVirtualSize) {
		return bad("size", "%d bytes exceeds the maximum of %d", h.size, uint64(maxVirtualSize))
	}
	need := l1EntriesFor(h.size, h.clusterBits)
	if uint64(h.l1Size) < need {
		return bad("l1_size", "%d entries cannot map %d bytes (need %d)", h.l1Size, h.size, need)
	}
	if uint64(h.l1Size)*8 > maxTableBytes {
		return bad("l1_size", "%d entries exceeds the limit of %d bytes", h.l1Size, maxTableBytes)
	}
	if err := checkTable(h.l1TableOffset, uint64(h.l1Size)*8, cs, fileSize); err != "" {
		return bad("l1_table_offset", "%#x: %s", h.l1TableOffset, err)
	}
	if h.refcountTableCls == 0 || uint64(h.refcountTableCls)*cs > maxTableBytes {
		return bad("refcount_table_clusters", "%d (must be 1 to %d bytes worth)", h.refcountTableCls, maxTableBytes)
	}
	if err := checkTable(h.refcountTableOffset, uint64(h.refcountTableCls)*cs, cs, fileSize); err != "" {
		return bad("refcount_table_offset", "%#x: %s", h.refcountTableOffset, err)
	}
	if h.backingFileOffset != 0 {
		if h.backingFileSize > maxBackingNameLen {
			return bad("backing_file_size", "%d bytes (at most %d)", h.backingFileSize, maxBackingNameLen)
		}
		end := h.backingFileOffset + uint64(h.backingFileSize)
		if end < h.backingFileOffset || end > uint64(bufLen) {
			return bad("backing_file_offset", "%#x+%d lies outside the header cluster", h.backingFileOffset, h.backingFileSize)
		}
	}
	return nil
}

// checkTable returns "" when a table of n bytes at off is cluster aligned and
// inside the file, else what is wrong with it.
func checkTable(off, n, cs uint64, fileSize int64) string {
	switch {
	case off == 0 && n > 0:
		return "table at offset 0"
	case off%cs != 0:
		return "not cluster aligned"
	case off+n < off || off+n > uint64(fileSize):
		return fmt.Sprintf("table of %d bytes ends beyond the end of the file (%d bytes)", n, fileSize)
	}
	return ""
}

func (h *header) checkFeatures(path string) error {
	if h.incompatible&incompatCorrupt != 0 {
		return &UnsupportedError{Path: path, Feature: "image is marked corrupt (incompatible bit 1); repair it with qemu-img check -r all"}
	}
	if h.incompatible&incompatExternalData != 0 || h.autoclear&autoclearRawExternal != 0 {
		return &UnsupportedError{Path: path, Feature: "external data file"}
	}
	if h.incompatible&incompatExtendedL2 != 0 {
		return &UnsupportedError{Path: path, Feature: "extended L2 entries (subclusters)"}
	}
	if unknown := h.incompatible &^ incompatKnown; unknown != 0 {
		bit := bits.TrailingZeros64(unknown)
		return &UnsupportedError{Path: path, Feature: fmt.Sprintf("unknown incompatible feature bit %d", bit)}
	}
	if h.incompatible&incompatCompression == 0 && h.compressionType != compressionZlib {
		return &FormatError{Path: path, Field: "compression_type", Reason: fmt.Sprintf("%d set without the compression type feature bit", h.compressionType)}
	}
	if h.compressionType != compressionZlib && h.compressionType != compressionZstd {
		return &UnsupportedError{Path: path, Feature: fmt.Sprintf("compression type %d (supported: 0 zlib, 1 zstd)", h.compressionType)}
	}
	return nil
}

// parseExtensions walks the header extensions that follow the header.
func (h *header) parseExtensions(path string, buf []byte) error {
	be := binary.BigEndian
	off := int(h.headerLength)
	end := len(buf)
	if h.backingFileOffset != 0 && int(h.backingFileOffset) < end {
		end = int(h.backingFileOffset)
	}
	for off+8 <= end {
		typ := be.Uint32(buf[off:])
		n := int(be.Uint32(buf[off+4:]))
		off += 8
		if typ == extEnd {
			return nil
		}
		if n < 0 || n > end-off {
			return &FormatError{Path: path, Field: "header extension", Reason: fmt.Sprintf("extension %#08x of %d bytes overruns the header cluster", typ, n)}
		}
		data := buf[off : off+n]
		if err := h.applyExtension(path, typ, data); err != nil {
			return err
		}
		off += (n + 7) &^ 7
	}
	if h.version == 3 {
		return &FormatError{Path: path, Field: "header extension", Reason: "no end-of-extensions marker in the header cluster"}
	}
	return nil
}

func (h *header) applyExtension(path string, typ uint32, data []byte) error {
	switch typ {
	case extBackingFormat:
		h.backingFormat = string(data)
	case extFeatureNames:
		h.featureNames = map[[2]byte]string{}
		for i := 0; i+48 <= len(data); i += 48 {
			name := data[i+2 : i+48]
			for j, c := range name {
				if c == 0 {
					name = name[:j]
					break
				}
			}
			h.featureNames[[2]byte{data[i], data[i+1]}] = string(name)
		}
	case extEncryption:
		return &UnsupportedError{Path: path, Feature: "encryption (full disk encryption header)"}
	case extExternalDataFn:
		return &UnsupportedError{Path: path, Feature: "external data file"}
	}
	// Unknown extensions and bitmaps are ignored, as the spec allows.
	return nil
}

func (h *header) parseBackingName(path string, buf []byte) error {
	if h.backingFileOffset == 0 {
		return nil
	}
	name := buf[h.backingFileOffset : h.backingFileOffset+uint64(h.backingFileSize)]
	for _, c := range name {
		if c == 0 {
			return &FormatError{Path: path, Field: "backing file name", Reason: "contains a NUL byte"}
		}
	}
	if len(name) == 0 {
		return &FormatError{Path: path, Field: "backing file name", Reason: "empty"}
	}
	h.backingFile = string(name)
	return nil
}

// encode writes a version 3 header with its extensions and backing file name
// into a buffer of one cluster.
func (h *header) encode() ([]byte, error) {
	buf := make([]byte, h.clusterSize())
	be := binary.BigEndian
	be.PutUint32(buf[0:], magic)
	be.PutUint32(buf[4:], 3)
	be.PutUint32(buf[20:], h.clusterBits)
	be.PutUint64(buf[24:], h.size)
	be.PutUint32(buf[36:], h.l1Size)
	be.PutUint64(buf[40:], h.l1TableOffset)
	be.PutUint64(buf[48:], h.refcountTableOffset)
	be.PutUint32(buf[56:], h.refcountTableCls)
	be.PutUint64(buf[72:], h.incompatible)
	be.PutUint64(buf[80:], h.compatible)
	be.PutUint64(buf[88:], h.autoclear)
	be.PutUint32(buf[96:], 4)
	be.PutUint32(buf[100:], headerLength)
	off := headerLength
	if h.backingFormat != "" {
		n := len(h.backingFormat)
		be.PutUint32(buf[off:], extBackingFormat)
		be.PutUint32(buf[off+4:], uint32(n))
		copy(buf[off+8:], h.backingFormat)
		off += 8 + (n+7)&^7
	}
	off += 8 // end-of-extensions marker: eight zero bytes
	if h.backingFile != "" {
		if len(h.backingFile) > maxBackingNameLen || off+len(h.backingFile) > len(buf) {
			return nil, fmt.Errorf("qcow2: backing file name of %d bytes is too long (at most %d)", len(h.backingFile), maxBackingNameLen)
		}
		be.PutUint64(buf[8:], uint64(off))
		be.PutUint32(buf[16:], uint32(len(h.backingFile)))
		copy(buf[off:], h.backingFile)
	}
	return buf, nil
}

// Limits that keep a corrupt header from making us allocate without bound.
const (
	maxVirtualSize = int64(1) << 55   // offsets are 56 bits in table entries
	maxTableBytes  = uint64(64) << 20 // L1 and refcount tables, as QEMU
)

// l1EntriesFor is the number of L1 entries needed to map size bytes.
func l1EntriesFor(size uint64, clusterBits uint32) uint64 {
	perL2 := uint64(1) << (2*clusterBits - 3) // bytes mapped by one L2 table
	return (size + perL2 - 1) / perL2
}
