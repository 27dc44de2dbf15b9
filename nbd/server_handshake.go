package nbd

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// errAbort ends the handshake after NBD_OPT_ABORT was acknowledged.
var errAbort = errors.New("nbd: client aborted the handshake")

// handshake runs the fixed newstyle handshake. It returns nil once the
// connection has entered transmission with c.exp attached.
func (c *serverConn) handshake(ctx context.Context) error {
	if _, err := c.nc.Write(greeting{Flags: FlagFixedNewstyle | FlagNoZeroes}.encode()); err != nil {
		return err
	}
	var b [4]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		return err
	}
	flags := ClientFlags(binary.BigEndian.Uint32(b[:]))
	if flags&^(FlagCFixedNewstyle|FlagCNoZeroes) != 0 {
		return fmt.Errorf("%w: unknown client flags %s", errMalformed, flags)
	}
	c.noZeroes = flags&FlagCNoZeroes != 0
	for c.exp == nil {
		if err := c.nextOption(ctx); err != nil {
			return err
		}
	}
	return nil
}

// nextOption reads and answers one option.
func (c *serverConn) nextOption(ctx context.Context) error {
	o, err := readOption(c.br)
	var big optionTooBig
	if errors.As(err, &big) {
		return c.optReply(big.Opt, RepErrTooBig, "option data too long")
	}
	if err != nil {
		return err
	}
	if c.srv.TLSRequired && !c.tls && o.Opt != OptStartTLS && o.Opt != OptAbort {
		if o.Opt == OptExportName {
			return errors.New("nbd: NBD_OPT_EXPORT_NAME before the required STARTTLS")
		}
		return c.optReply(o.Opt, RepErrTLSReqd, "TLS is required")
	}
	switch o.Opt {
	case OptExportName:
		return c.optExportName(ctx, o)
	case OptAbort:
		_ = c.optReply(o.Opt, RepAck, "")
		return errAbort
	case OptList:
		return c.optList(ctx, o)
	case OptStartTLS:
		return c.optStartTLS(ctx, o)
	case OptInfo, OptGo:
		return c.optInfo(ctx, o)
	}
	return c.optReply(o.Opt, RepErrUnsup, "option not supported")
}

// optReply sends a reply without data, or with a message for errors.
func (c *serverConn) optReply(o Opt, t Rep, msg string) error {
	r := optionReply{Opt: o, Type: t}
	if t.IsErr() {
		r.Data = []byte(msg)
	}
	return c.send(r)
}

func (c *serverConn) send(r optionReply) error {
	_, err := c.nc.Write(r.encode())
	return err
}

// open resolves and, when serve is set, attaches an export. On failure it
// returns the error reply: NBD_REP_ERR_UNKNOWN when the export is unknown,
// refused or revoked, NBD_REP_ERR_POLICY when it has all the connections
// Server.MaxExportConns allows.
func (c *serverConn) open(ctx context.Context, name string, serve bool) (*Export, Rep) {
	if c.srv.Exports == nil {
		return nil, RepErrUnknown
	}
	e, err := c.srv.Exports.Open(ctx, name)
	if err != nil || e == nil || e.Backend == nil {
		if err != nil && !errors.Is(err, ErrUnknownExport) {
			c.srv.debugf("nbd: %s: export %q refused: %s", c.remote(), redactName(name), redactIn(err.Error(), name))
		}
		return nil, RepErrUnknown
	}
	if serve {
		switch err := c.attach(e); {
		case errors.Is(err, errTooManyConns):
			c.srv.warnf("nbd: %s: export %q refused: it has %d connections, the most allowed", c.remote(), redactName(name), c.srv.maxExportConns())
			return nil, RepErrPolicy
		case err != nil:
			return nil, RepErrUnknown
		}
	}
	if !serve && e.Revoked() {
		return nil, RepErrUnknown
	}
	return e, 0
}

// optExportName ends the handshake the old way: no error can be sent back,
// so a refused export closes the connection.
func (c *serverConn) optExportName(ctx context.Context, o option) error {
	name, err := checkString(o.Data)
	if err != nil {
		return err
	}
	e, rep := c.open(ctx, name, true)
	if e == nil {
		if rep == RepErrPolicy {
			return fmt.Errorf("%w (NBD_OPT_EXPORT_NAME of %q)", errTooManyConns, redactName(name))
		}
		return fmt.Errorf("%w %q (NBD_OPT_EXPORT_NAME)", ErrUnknownExport, redactName(name))
	}
	_, err = c.nc.Write(exportInfo{Size: c.size, Flags: c.flags}.encodeExportName(c.noZeroes))
	return err
}

// optInfo answers NBD_OPT_INFO and NBD_OPT_GO; a successful GO attaches the
// export and so ends the handshake.
func (c *serverConn) optInfo(ctx context.Context, o option) error {
	var q infoRequest
	if err := q.decode(o.Data); err != nil {
		return c.optReply(o.Opt, RepErrInvalid, "malformed request: "+err.Error())
	}
	e, rep := c.open(ctx, q.Name, o.Opt == OptGo)
	switch {
	case rep == RepErrPolicy:
		return c.optReply(o.Opt, rep, "too many connections to this export")
	case e == nil:
		return c.optReply(o.Opt, RepErrUnknown, "unknown export")
	}
	size, flags := c.size, c.flags
	if o.Opt == OptInfo {
		size, flags = uint64(max(e.Backend.Size(), 0)), exportFlags(e)
	}
	for _, info := range infoReplies(e, q.Infos, size, flags) {
		if err := c.send(optionReply{Opt: o.Opt, Type: RepInfo, Data: info}); err != nil {
			return err
		}
	}
	return c.optReply(o.Opt, RepAck, "")
}

// infoReplies are the NBD_REP_INFO data for an export: NBD_INFO_EXPORT and
// NBD_INFO_BLOCK_SIZE always, name and description when asked for.
func infoReplies(e *Export, asked []Info, size uint64, flags TransmissionFlags) [][]byte {
	out := [][]byte{
		exportInfo{Size: size, Flags: flags}.encodeInfo(),
		blockSizeInfo{Min: 1, Preferred: 4096, Max: MaxPayloadSize}.encodeInfo(),
	}
	for _, t := range asked {
		switch {
		case t == InfoName:
			out = append(out, encodeStringInfo(InfoName, e.Name))
		case t == InfoDescription && e.Description != "":
			out = append(out, encodeStringInfo(InfoDescription, e.Description))
		}
	}
	return out
}

// exportFlags are the transmission flags the server advertises for e.
func exportFlags(e *Export) TransmissionFlags {
	f := FlagHasFlags | FlagSendFlush | FlagCanMultiConn | FlagSendCache
	if e.ReadOnly {
		return f | FlagReadOnly
	}
	return f | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes
}

// optList answers NBD_OPT_LIST: nothing unless Server.ListExports is set.
func (c *serverConn) optList(ctx context.Context, o option) error {
	if len(o.Data) != 0 {
		return c.optReply(o.Opt, RepErrInvalid, "NBD_OPT_LIST takes no data")
	}
	var list []ExportInfo
	if c.srv.ListExports && c.srv.Exports != nil {
		var err error
		if list, err = c.srv.Exports.List(ctx); err != nil {
			return c.optReply(o.Opt, RepErrPolicy, "listing failed")
		}
	}
	for _, e := range list {
		if len(e.Name) > MaxStringLen || len(e.Description) > MaxStringLen {
			continue
		}
		data := serverEntry{Name: e.Name, Description: e.Description}.encode()
		if err := c.send(optionReply{Opt: o.Opt, Type: RepServer, Data: data}); err != nil {
			return err
		}
	}
	return c.optReply(o.Opt, RepAck, "")
}

// optStartTLS upgrades the connection. Nothing negotiated before it is kept
// (the server keeps no option state but the client flags).
func (c *serverConn) optStartTLS(ctx context.Context, o option) error {
	switch {
	case c.srv.TLSConfig == nil:
		return c.optReply(o.Opt, RepErrPolicy, "TLS is not configured")
	case c.tls:
		return c.optReply(o.Opt, RepErrInvalid, "TLS is already up")
	case len(o.Data) != 0:
		return c.optReply(o.Opt, RepErrInvalid, "NBD_OPT_STARTTLS takes no data")
	case c.br.Buffered() != 0:
		return fmt.Errorf("%w: data after NBD_OPT_STARTTLS", errMalformed)
	}
	if err := c.optReply(o.Opt, RepAck, ""); err != nil {
		return err
	}
	tc := tls.Server(c.raw, c.srv.TLSConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("nbd: TLS handshake: %w", err)
	}
	c.nc, c.tls = tc, true
	c.br.Reset(tc)
	return nil
}
