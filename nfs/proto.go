package nfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
	"github.com/willscott/go-nfs-client/nfs/xdr"
)

// The calls of MOUNT v3, NFSv3 (RFC 1813) and the portmapper (RFC 1833)
// this backend makes, one small function each, on the library's types.

// getport asks the portmapper for a program's TCP port; 0 means it is not
// registered.
func (c *rpcConn) getport(ctx context.Context, prog, vers uint32) (int, error) {
	m := rpc.Mapping{Prog: prog, Vers: vers, Prot: rpc.IPProtoTCP}
	r, err := c.call(ctx, rpc.PmapProg, rpc.PmapVers, rpc.PmapProcGetPort, m)
	if err != nil {
		return 0, err
	}
	port, err := xdr.ReadUint32(r)
	if err != nil || port > 65535 {
		return 0, fmt.Errorf("portmapper at %s: bad GETPORT reply (%d, %v)", c.addr, port, err)
	}
	return int(port), nil
}

// mnt asks MOUNT for the root file handle of an export.
func (c *rpcConn) mnt(ctx context.Context, export string) ([]byte, error) {
	r, err := c.call(ctx, nfs.MountProg, nfs.MountVers, nfs.MountProc3MNT, export)
	if err != nil {
		return nil, err
	}
	var res struct {
		Status uint32
	}
	if err := decode(r, &res); err != nil {
		return nil, err
	}
	if res.Status != nfs.MNT3Ok {
		return nil, &mountError{Status: res.Status}
	}
	var fh []byte
	if err := decode(r, &fh); err != nil {
		return nil, err
	}
	return fh, nil
}

// mountError is MOUNT's refusal of an export (RFC 1813, mountstat3).
type mountError struct {
	Status uint32
}

func (e *mountError) Error() string {
	switch e.Status {
	case nfs.MNT3ErrNoEnt:
		return "MNT3ERR_NOENT: no such export"
	case nfs.MNT3ErrAcces:
		return "MNT3ERR_ACCES: not exported, or not to this host"
	case nfs.MNT3ErrPerm:
		return "MNT3ERR_PERM: the server refuses this host, or wants a reserved source port (run as root)"
	case nfs.MNT3ErrNotDir:
		return "MNT3ERR_NOTDIR: not a directory"
	}
	return fmt.Sprintf("mount status %d", e.Status)
}

// nfsCall makes an NFSv3 call and checks its status.
func (c *rpcConn) nfsCall(ctx context.Context, proc uint32, args any) (*bytes.Reader, error) {
	r, err := c.call(ctx, nfs.Nfs3Prog, nfs.Nfs3Vers, proc, args)
	if err != nil {
		return nil, err
	}
	var status uint32
	if err := decode(r, &status); err != nil {
		return nil, err
	}
	if status != nfs.NFS3Ok {
		return nil, nfsStatus(status)
	}
	return r, nil
}

// nfsStatus converts an NFSv3 status with the library, which gives
// fs.ErrNotExist, fs.ErrExist and fs.ErrPermission for those three and an
// *nfs.Error for the others it knows; os.ErrInvalid would hide the rest.
func nfsStatus(s uint32) error {
	err := nfs.NFS3Error(s)
	if errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("NFS3 status %d", s)
	}
	return err
}

// lookup finds name in dir; LOOKUP does not follow symbolic links.
func (c *rpcConn) lookup(ctx context.Context, dir []byte, name string) ([]byte, nfs.Fattr, error) {
	r, err := c.nfsCall(ctx, nfs.NFSProc3Lookup, nfs.Diropargs3{FH: dir, Filename: name})
	if err != nil {
		return nil, nfs.Fattr{}, err
	}
	var res struct {
		FH   []byte
		Attr nfs.PostOpAttr
	}
	if err := decode(r, &res); err != nil {
		return nil, nfs.Fattr{}, err
	}
	if !res.Attr.IsSet {
		attr, err := c.getattr(ctx, res.FH)
		return res.FH, attr, err
	}
	return res.FH, res.Attr.Attr, nil
}

func (c *rpcConn) getattr(ctx context.Context, fh []byte) (nfs.Fattr, error) {
	r, err := c.nfsCall(ctx, nfs.NFSProc3GetAttr, fh)
	if err != nil {
		return nfs.Fattr{}, err
	}
	var attr nfs.Fattr
	err = decode(r, &attr)
	return attr, err
}

// mkdir makes dir/name with mode and returns its handle.
func (c *rpcConn) mkdir(ctx context.Context, dir []byte, name string, mode uint32) ([]byte, error) {
	args := struct {
		Where nfs.Diropargs3
		Attr  nfs.Sattr3
	}{nfs.Diropargs3{FH: dir, Filename: name}, nfs.Sattr3{Mode: nfs.SetMode{SetIt: true, Mode: mode}}}
	r, err := c.nfsCall(ctx, nfs.NFSProc3Mkdir, args)
	if err != nil {
		return nil, err
	}
	var res struct{ FH nfs.PostOpFH3 }
	if err := decode(r, &res); err != nil {
		return nil, err
	}
	if !res.FH.IsSet { // the server may leave it out: ask
		fh, _, err := c.lookup(ctx, dir, name)
		return fh, err
	}
	return res.FH.FH, nil
}

// setattr sets attributes without a guard.
func (c *rpcConn) setattr(ctx context.Context, fh []byte, attr nfs.Sattr3) error {
	args := struct {
		FH    []byte
		Attr  nfs.Sattr3
		Guard bool
	}{FH: fh, Attr: attr}
	_, err := c.nfsCall(ctx, nfs.NFSProc3SetAttr, args)
	return err
}

func (c *rpcConn) remove(ctx context.Context, dir []byte, name string) error {
	_, err := c.nfsCall(ctx, nfs.NFSProc3Remove, nfs.Diropargs3{FH: dir, Filename: name})
	return err
}

func (c *rpcConn) rmdir(ctx context.Context, dir []byte, name string) error {
	_, err := c.nfsCall(ctx, nfs.NFSProc3RmDir, nfs.Diropargs3{FH: dir, Filename: name})
	return err
}

func (c *rpcConn) rename(ctx context.Context, fromDir []byte, from string, toDir []byte, to string) error {
	args := struct{ From, To nfs.Diropargs3 }{
		nfs.Diropargs3{FH: fromDir, Filename: from}, nfs.Diropargs3{FH: toDir, Filename: to},
	}
	_, err := c.nfsCall(ctx, nfs.NFSProc3Rename, args)
	return err
}

// readdirplus lists dir with attributes and handles, all pages, without
// "." and "..".
func (c *rpcConn) readdirplus(ctx context.Context, dir []byte) ([]nfs.EntryPlus, error) {
	var out []nfs.EntryPlus
	var cookie, verf uint64
	for {
		page, eof, err := c.readdirplusPage(ctx, dir, &cookie, &verf)
		if err != nil {
			return nil, err
		}
		for _, e := range page {
			if e.FileName != "." && e.FileName != ".." {
				out = append(out, e)
			}
		}
		if eof {
			return out, nil
		}
		if len(page) == 0 {
			return nil, fmt.Errorf("NFS service at %s: READDIRPLUS returned no entries and no end", c.addr)
		}
	}
}

func (c *rpcConn) readdirplusPage(ctx context.Context, dir []byte, cookie, verf *uint64) ([]nfs.EntryPlus, bool, error) {
	args := struct {
		FH                 []byte
		Cookie, CookieVerf uint64
		DirCount, MaxCount uint32
	}{dir, *cookie, *verf, 8 << 10, 32 << 10}
	r, err := c.nfsCall(ctx, nfs.NFSProc3ReadDirPlus, args)
	if err != nil {
		return nil, false, err
	}
	var head struct {
		DirAttr    nfs.PostOpAttr
		CookieVerf uint64
	}
	if err := decode(r, &head); err != nil {
		return nil, false, err
	}
	*verf = head.CookieVerf
	var page []nfs.EntryPlus
	for {
		var item struct {
			Follows bool          `xdr:"union"`
			Entry   nfs.EntryPlus `xdr:"unioncase=1"`
		}
		if err := decode(r, &item); err != nil {
			return nil, false, err
		}
		if !item.Follows {
			break
		}
		page = append(page, item.Entry)
		*cookie = item.Entry.Cookie
	}
	var eof bool
	err = decode(r, &eof)
	return page, eof, err
}

// createFile makes (or truncates) the file dir/name with mode and returns
// its handle: CREATE, UNCHECKED, with size 0.
func (c *rpcConn) createFile(ctx context.Context, dir []byte, name string, mode uint32) ([]byte, error) {
	args := struct {
		Where nfs.Diropargs3
		How   uint32 // createmode3: UNCHECKED
		Attr  nfs.Sattr3
	}{nfs.Diropargs3{FH: dir, Filename: name}, 0,
		nfs.Sattr3{Mode: nfs.SetMode{SetIt: true, Mode: mode}, Size: nfs.SetSize{SetIt: true}}}
	r, err := c.nfsCall(ctx, nfs.NFSProc3Create, args)
	if err != nil {
		return nil, err
	}
	var res struct{ FH nfs.PostOpFH3 }
	if err := decode(r, &res); err != nil {
		return nil, err
	}
	if !res.FH.IsSet {
		fh, _, err := c.lookup(ctx, dir, name)
		return fh, err
	}
	return res.FH.FH, nil
}

// write writes data at offset 0 of fh, FILE_SYNC, in one call (data is
// small).
func (c *rpcConn) write(ctx context.Context, fh, data []byte) error {
	args := struct {
		FH     []byte
		Offset uint64
		Count  uint32
		Stable uint32 // stable_how: FILE_SYNC
		Data   []byte
	}{fh, 0, uint32(len(data)), 2, data}
	r, err := c.nfsCall(ctx, nfs.NFSProc3Write, args)
	if err != nil {
		return err
	}
	var res struct {
		Wcc   nfs.WccData
		Count uint32
	}
	if err := decode(r, &res); err != nil {
		return err
	}
	if int(res.Count) != len(data) {
		return fmt.Errorf("WRITE wrote %d of %d bytes", res.Count, len(data))
	}
	return nil
}

// read reads up to count bytes from offset 0 of fh, in one call.
func (c *rpcConn) read(ctx context.Context, fh []byte, count uint32) ([]byte, error) {
	args := struct {
		FH     []byte
		Offset uint64
		Count  uint32
	}{fh, 0, count}
	r, err := c.nfsCall(ctx, nfs.NFSProc3Read, args)
	if err != nil {
		return nil, err
	}
	var res struct {
		Attr  nfs.PostOpAttr
		Count uint32
		EOF   bool
		Data  []byte
	}
	if err := decode(r, &res); err != nil {
		return nil, err
	}
	if len(res.Data) > int(count) {
		return nil, fmt.Errorf("READ returned %d bytes where %d were asked for", len(res.Data), count)
	}
	return res.Data, nil
}
