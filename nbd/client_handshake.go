package nbd

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ClientOptions choose what Negotiate asks the server for.
type ClientOptions struct {
	ExportName string
	// TLSConfig, when set, makes the client upgrade with NBD_OPT_STARTTLS
	// first and fail if the server refuses.
	TLSConfig *tls.Config
}

// OptionError is a server's error reply to an option.
type OptionError struct {
	Opt     Opt
	Reply   Rep
	Message string
}

func (e *OptionError) Error() string {
	msg := "nbd: server answered " + e.Opt.String() + " with " + e.Reply.String()
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Negotiate runs the client side of the fixed newstyle handshake on conn:
// optional STARTTLS, then NBD_OPT_GO asking for NBD_INFO_BLOCK_SIZE, name and
// description (NBD_OPT_EXPORT_NAME when the server lacks GO). It returns the
// connection to use from then on (conn, or its TLS layer) in the
// transmission phase with nothing buffered, so it can be handed to the
// kernel, and what the server said about the export. The client has agreed
// to the block sizes in the returned info.
func Negotiate(ctx context.Context, conn net.Conn, o ClientOptions) (net.Conn, ExportInfo, error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	nc, info, err := negotiate(ctx, conn, o)
	if !stop() && ctx.Err() != nil {
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		return nil, ExportInfo{}, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, ExportInfo{}, err
	}
	return nc, info, nil
}

func negotiate(ctx context.Context, conn net.Conn, o ClientOptions) (net.Conn, ExportInfo, error) {
	noZeroes, err := clientGreeting(conn)
	if err != nil {
		return nil, ExportInfo{}, err
	}
	nc := conn
	if o.TLSConfig != nil {
		if nc, err = clientStartTLS(ctx, conn, o.TLSConfig); err != nil {
			return nil, ExportInfo{}, err
		}
	}
	info, err := clientGo(nc, o.ExportName)
	var oe *OptionError
	switch {
	case errors.As(err, &oe) && oe.Reply == RepErrUnsup:
		info, err = clientExportName(nc, o.ExportName, noZeroes)
	case oe != nil:
		// The spec wants a soft disconnect after a refused option.
		_ = clientOption(nc, option{Opt: OptAbort}, nil)
	}
	return nc, info, err
}

// clientGreeting reads the server greeting and answers with our flags; it
// reports whether NBD_FLAG_C_NO_ZEROES was agreed.
func clientGreeting(conn net.Conn) (bool, error) {
	var b [greetingLen]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return false, fmt.Errorf("nbd: reading greeting: %w", err)
	}
	var g greeting
	if err := g.decode(b[:]); err != nil {
		return false, err
	}
	if g.Flags&FlagFixedNewstyle == 0 {
		return false, errors.New("nbd: server does not speak fixed newstyle")
	}
	flags := FlagCFixedNewstyle
	if g.Flags&FlagNoZeroes != 0 {
		flags |= FlagCNoZeroes
	}
	binary.BigEndian.PutUint32(b[:4], uint32(flags))
	_, err := conn.Write(b[:4])
	return flags&FlagCNoZeroes != 0, err
}

// clientOption sends an option and reads replies, passing each non-final one
// to each (which may be nil); it returns after NBD_REP_ACK or an error reply.
func clientOption(nc net.Conn, o option, each func(optionReply) error) error {
	if _, err := nc.Write(o.encode()); err != nil {
		return err
	}
	for {
		r, err := readOptionReply(nc)
		if err != nil {
			return fmt.Errorf("nbd: reading reply to %s: %w", o.Opt, err)
		}
		switch {
		case r.Opt != o.Opt:
			return fmt.Errorf("%w: reply to %s for %s", errMalformed, r.Opt, o.Opt)
		case r.Type == RepAck:
			return nil
		case r.Type.IsErr():
			msg, _ := checkString(r.Data)
			return &OptionError{Opt: o.Opt, Reply: r.Type, Message: msg}
		case each == nil:
			return fmt.Errorf("%w: unexpected %s to %s", errMalformed, r.Type, o.Opt)
		}
		if err := each(r); err != nil {
			return err
		}
	}
}

func clientStartTLS(ctx context.Context, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
	if err := clientOption(conn, option{Opt: OptStartTLS}, nil); err != nil {
		return nil, err
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("nbd: TLS handshake: %w", err)
	}
	return tc, nil
}

func clientGo(nc net.Conn, name string) (ExportInfo, error) {
	info := defaultExportInfo(name)
	q := infoRequest{Name: name, Infos: []Info{InfoBlockSize, InfoName, InfoDescription}}
	gotExport := false
	err := clientOption(nc, option{Opt: OptGo, Data: q.encode()}, func(r optionReply) error {
		if r.Type != RepInfo {
			return fmt.Errorf("%w: %s to NBD_OPT_GO", errMalformed, r.Type)
		}
		gotExport = gotExport || len(r.Data) >= 2 && Info(binary.BigEndian.Uint16(r.Data)) == InfoExport
		return decodeInfo(r.Data, &info)
	})
	if err == nil && !gotExport {
		err = fmt.Errorf("%w: NBD_OPT_GO succeeded without NBD_INFO_EXPORT", errMalformed)
	}
	return info, err
}

func clientExportName(nc net.Conn, name string, noZeroes bool) (ExportInfo, error) {
	if _, err := nc.Write(option{Opt: OptExportName, Data: []byte(name)}.encode()); err != nil {
		return ExportInfo{}, err
	}
	b := make([]byte, 134)
	if noZeroes {
		b = b[:10]
	}
	if _, err := io.ReadFull(nc, b); err != nil {
		return ExportInfo{}, fmt.Errorf("nbd: export %q refused: %w", redactName(name), err)
	}
	info := defaultExportInfo(name)
	info.Size, info.Flags = binary.BigEndian.Uint64(b), TransmissionFlags(binary.BigEndian.Uint16(b[8:]))
	return info, nil
}

func defaultExportInfo(name string) ExportInfo {
	return ExportInfo{Name: name, MinBlockSize: 1, PreferredBlockSize: 4096, MaxPayloadSize: MaxPayloadSize}
}

// ListExports asks the server on conn for its exports (NBD_OPT_LIST) and ends
// the handshake with NBD_OPT_ABORT. conn is left open for the caller to close.
func ListExports(ctx context.Context, conn net.Conn) ([]ExportInfo, error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := clientGreeting(conn); err != nil {
		return nil, err
	}
	var list []ExportInfo
	err := clientOption(conn, option{Opt: OptList}, func(r optionReply) error {
		var e serverEntry
		if r.Type != RepServer || e.decode(r.Data) != nil {
			return fmt.Errorf("%w: %s to NBD_OPT_LIST", errMalformed, r.Type)
		}
		list = append(list, ExportInfo{Name: e.Name, Description: e.Description})
		return nil
	})
	if err != nil {
		return nil, err
	}
	_ = clientOption(conn, option{Opt: OptAbort}, nil)
	return list, nil
}
