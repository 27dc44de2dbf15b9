package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"reflect"
	"runtime"
	"testing"
	"time"
)

func TestStrings(t *testing.T) {
	for got, want := range map[string]string{
		OptGo.String():                              "NBD_OPT_GO",
		OptExportName.String():                      "NBD_OPT_EXPORT_NAME",
		Opt(99).String():                            "NBD_OPT_UNKNOWN(99)",
		RepAck.String():                             "NBD_REP_ACK",
		RepErrUnsup.String():                        "NBD_REP_ERR_UNSUP",
		RepErrTLSReqd.String():                      "NBD_REP_ERR_TLS_REQD",
		InfoBlockSize.String():                      "NBD_INFO_BLOCK_SIZE",
		CmdWriteZeroes.String():                     "NBD_CMD_WRITE_ZEROES",
		CmdDisc.String():                            "NBD_CMD_DISC",
		(CmdFlagFUA | CmdFlagNoHole).String():       "NBD_CMD_FLAG_FUA|NBD_CMD_FLAG_NO_HOLE",
		(FlagHasFlags | FlagReadOnly).String():      "NBD_FLAG_HAS_FLAGS|NBD_FLAG_READ_ONLY",
		TransmissionFlags(1 << 15).String():         "0x8000",
		FlagFixedNewstyle.String():                  "NBD_FLAG_FIXED_NEWSTYLE",
		(FlagCFixedNewstyle | 1<<5).String():        "NBD_FLAG_C_FIXED_NEWSTYLE|0x20",
		CmdFlags(0).String():                        "0",
		EINVAL.String():                             "NBD_EINVAL",
		ESHUTDOWN.Error():                           "NBD_ESHUTDOWN: cannot send after transport endpoint shutdown",
		FlagCanMultiConn.String():                   "NBD_FLAG_CAN_MULTI_CONN",
		(FlagSendFUA | FlagSendTrim).String():       "NBD_FLAG_SEND_FUA|NBD_FLAG_SEND_TRIM",
		(FlagSendCache | FlagSendDF).String():       "NBD_FLAG_SEND_DF|NBD_FLAG_SEND_CACHE",
		FlagSendWriteZeroes.String():                "NBD_FLAG_SEND_WRITE_ZEROES",
		FlagSendFlush.String():                      "NBD_FLAG_SEND_FLUSH",
		Rep(repErr + 42).String():                   "NBD_REP_ERR_UNKNOWN(42)",
		RepInfo.String():                            "NBD_REP_INFO",
		Cmd(100).String():                           "NBD_CMD_UNKNOWN(100)",
		(FlagCNoZeroes).String():                    "NBD_FLAG_C_NO_ZEROES",
		(FlagNoZeroes | FlagFixedNewstyle).String(): "NBD_FLAG_FIXED_NEWSTYLE|NBD_FLAG_NO_ZEROES",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestRoundTrips(t *testing.T) {
	q := request{Flags: CmdFlagFUA, Type: CmdWrite, Handle: 0x0102030405060708, Offset: 1 << 40, Length: 4096}
	b := make([]byte, requestLen)
	q.encode(b)
	var q2 request
	if err := q2.decode(b); err != nil || q2 != q {
		t.Fatalf("request: %+v %v", q2, err)
	}
	r := simpleReply{Errno: ENOSPC, Handle: 9}
	b = make([]byte, simpleReplyLen)
	r.encode(b)
	var r2 simpleReply
	if err := r2.decode(b); err != nil || r2 != r {
		t.Fatalf("reply: %+v %v", r2, err)
	}
	ir := infoRequest{Name: "vol-ab12", Infos: []Info{InfoBlockSize, InfoName}}
	var ir2 infoRequest
	if err := ir2.decode(ir.encode()); err != nil || !reflect.DeepEqual(ir, ir2) {
		t.Fatalf("info request: %+v %v", ir2, err)
	}
	se := serverEntry{Name: "a", Description: "b c"}
	var se2 serverEntry
	if err := se2.decode(se.encode()); err != nil || se2 != se {
		t.Fatalf("server entry: %+v %v", se2, err)
	}
	var info ExportInfo
	for _, d := range [][]byte{
		exportInfo{Size: 77, Flags: FlagHasFlags}.encodeInfo(),
		blockSizeInfo{1, 4096, MaxPayloadSize}.encodeInfo(),
		encodeStringInfo(InfoName, "n"), encodeStringInfo(InfoDescription, "d"),
		{0, 99, 1, 2, 3},
	} {
		if err := decodeInfo(d, &info); err != nil {
			t.Fatal(err)
		}
	}
	want := ExportInfo{Name: "n", Description: "d", Size: 77, Flags: FlagHasFlags, MinBlockSize: 1, PreferredBlockSize: 4096, MaxPayloadSize: MaxPayloadSize}
	if info != want {
		t.Fatalf("info %+v", info)
	}
	o, err := readOption(bytes.NewReader(option{Opt: OptList, Data: []byte("x")}.encode()))
	if err != nil || o.Opt != OptList || string(o.Data) != "x" {
		t.Fatalf("option %+v %v", o, err)
	}
	rep, err := readOptionReply(bytes.NewReader(optionReply{Opt: OptGo, Type: RepErrUnknown, Data: []byte("m")}.encode()))
	if err != nil || rep.Type != RepErrUnknown || string(rep.Data) != "m" {
		t.Fatalf("reply %+v %v", rep, err)
	}
}

func TestLimits(t *testing.T) {
	// A header announcing 4 GiB of option data with none behind it fails
	// without allocating it.
	h := option{Opt: OptGo}.encode()
	binary.BigEndian.PutUint32(h[12:], 1<<32-1)
	if _, err := readOption(bytes.NewReader(h)); err == nil {
		t.Fatal("accepted")
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _ = readOption(bytes.NewReader(h))
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
		t.Fatalf("allocated %d bytes for a bogus option header", n)
	}
	rh := optionReply{Opt: OptGo, Type: RepInfo}.encode()
	binary.BigEndian.PutUint32(rh[16:], maxReplyLen+1)
	if _, err := readOptionReply(bytes.NewReader(rh)); err == nil {
		t.Fatal("reply over limit accepted")
	}
	for _, bad := range [][]byte{
		{0, 0, 0, 1},                                           // too short
		{0, 0, 0, 5, 'a', 0, 0},                                // name longer than data
		{0, 0, 0, 1, 'a', 0, 2, 0, 1},                          // count says 2, one given
		{0, 0, 0, 2, 'a', 0, 0, 0},                             // NUL in name
		{0, 0, 0, 1, 0xff, 0, 0},                               // not UTF-8
		append([]byte{0, 0, 0x10, 1}, make([]byte, 4097+2)...), // name over 4096
	} {
		var q infoRequest
		if q.decode(bad) == nil {
			t.Errorf("infoRequest accepted % x", bad[:min(len(bad), 12)])
		}
	}
	var info ExportInfo
	if decodeInfo(blockSizeInfo{3, 4096, 1 << 20}.encodeInfo(), &info) == nil {
		t.Error("block size 3 accepted")
	}
}

// fakeConn is a net.Conn reading from a fixed input and dropping writes.
type fakeConn struct{ r io.Reader }

func (f fakeConn) Read(p []byte) (int, error)       { return f.r.Read(p) }
func (f fakeConn) Write(p []byte) (int, error)      { return len(p), nil }
func (f fakeConn) Close() error                     { return nil }
func (f fakeConn) LocalAddr() net.Addr              { return &net.UnixAddr{Name: "fake"} }
func (f fakeConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Name: "fake"} }
func (f fakeConn) SetDeadline(time.Time) error      { return nil }
func (f fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (f fakeConn) SetWriteDeadline(time.Time) error { return nil }

func fuzzServer() (*Server, *Export) {
	var exports ExportMap
	e := &Export{Name: "disk", Backend: newMem(1 << 20)}
	exports.Add(e)
	return &Server{Exports: &exports, ListExports: true}, e
}

// FuzzReadRequest feeds arbitrary bytes to the transmission phase of a
// connection: it must never panic, and it allocates at most one payload
// buffer of MaxPayloadSize per request.
func FuzzReadRequest(f *testing.F) {
	hdr := func(q request, payload []byte) []byte {
		b := make([]byte, requestLen)
		q.encode(b)
		return append(b, payload...)
	}
	f.Add(hdr(request{Type: CmdRead, Length: 512}, nil))
	f.Add(hdr(request{Type: CmdWrite, Length: 3, Offset: 10}, []byte("abc")))
	f.Add(hdr(request{Type: CmdWriteZeroes, Flags: CmdFlagNoHole | CmdFlagFUA, Length: 4096}, nil))
	f.Add(hdr(request{Type: CmdWrite, Length: MaxPayloadSize + 1}, make([]byte, 64)))
	f.Add(append(hdr(request{Type: CmdTrim, Length: 1 << 20}, nil), hdr(request{Type: CmdDisc}, nil)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		srv, e := fuzzServer()
		c := newServerConn(srv, fakeConn{bytes.NewReader(data)})
		if err := c.attach(e); err != nil {
			t.Fatal(err)
		}
		_ = c.transmit()
		c.inflight.Wait()
		e.detach(c)
	})
}

// FuzzOption feeds arbitrary bytes to the server's handshake after a valid
// client flags word.
func FuzzOption(f *testing.F) {
	flags := []byte{0, 0, 0, 3}
	seed := func(opts ...option) []byte {
		b := bytes.Clone(flags)
		for _, o := range opts {
			b = append(b, o.encode()...)
		}
		return b
	}
	f.Add(seed(option{Opt: OptGo, Data: infoRequest{Name: "disk", Infos: []Info{InfoBlockSize}}.encode()}))
	f.Add(seed(option{Opt: OptInfo, Data: infoRequest{Name: "x"}.encode()}, option{Opt: OptList}))
	f.Add(seed(option{Opt: OptExportName, Data: []byte("disk")}))
	f.Add(seed(option{Opt: OptStartTLS}, option{Opt: OptAbort}))
	f.Add(seed(option{Opt: 42, Data: []byte{1, 2, 3}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		srv, _ := fuzzServer()
		c := newServerConn(srv, fakeConn{bytes.NewReader(data)})
		_ = c.handshake(context.Background())
		if c.exp != nil {
			c.exp.detach(c)
		}
	})
}

// FuzzClientHandshake feeds arbitrary server bytes to Negotiate.
func FuzzClientHandshake(f *testing.F) {
	g := greeting{Flags: FlagFixedNewstyle | FlagNoZeroes}.encode()
	ok := append(bytes.Clone(g), optionReply{Opt: OptGo, Type: RepInfo, Data: exportInfo{Size: 1, Flags: 1}.encodeInfo()}.encode()...)
	ok = append(ok, optionReply{Opt: OptGo, Type: RepAck}.encode()...)
	f.Add(ok)
	f.Add(append(bytes.Clone(g), optionReply{Opt: OptGo, Type: RepErrUnsup}.encode()...))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _, _ = Negotiate(context.Background(), fakeConn{bytes.NewReader(data)}, ClientOptions{ExportName: "disk"})
	})
}
