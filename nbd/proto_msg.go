package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Protocol errors: the peer broke the protocol; the connection cannot go on.
var (
	errBadMagic  = errors.New("nbd: bad magic")
	errMalformed = errors.New("nbd: malformed message")
	errTooLong   = errors.New("nbd: length over limit")
)

// greeting is the server's first message of the newstyle handshake.
type greeting struct {
	Flags HandshakeFlags
}

const greetingLen = 18

func (g greeting) encode() []byte {
	b := make([]byte, greetingLen)
	binary.BigEndian.PutUint64(b[0:], NBDMagic)
	binary.BigEndian.PutUint64(b[8:], IHaveOpt)
	binary.BigEndian.PutUint16(b[16:], uint16(g.Flags))
	return b
}

func (g *greeting) decode(b []byte) error {
	if len(b) != greetingLen {
		return errMalformed
	}
	if binary.BigEndian.Uint64(b[0:]) != NBDMagic || binary.BigEndian.Uint64(b[8:]) != IHaveOpt {
		return fmt.Errorf("%w in greeting (not a newstyle NBD server?)", errBadMagic)
	}
	g.Flags = HandshakeFlags(binary.BigEndian.Uint16(b[16:]))
	return nil
}

// option is one option request of the handshake phase.
type option struct {
	Opt  Opt
	Data []byte
}

const optionHeaderLen = 16

func (o option) encode() []byte {
	b := make([]byte, optionHeaderLen+len(o.Data))
	binary.BigEndian.PutUint64(b[0:], IHaveOpt)
	binary.BigEndian.PutUint32(b[8:], uint32(o.Opt))
	binary.BigEndian.PutUint32(b[12:], uint32(len(o.Data)))
	copy(b[16:], o.Data)
	return b
}

// optionTooBig is returned by readOption when the option's data was longer
// than maxOptionLen and has been skipped; the stream is still in sync.
type optionTooBig struct{ Opt Opt }

func (e optionTooBig) Error() string { return "nbd: " + e.Opt.String() + " data too long" }

// readOption reads one option. Data longer than maxOptionLen is skipped
// (optionTooBig) up to maxOptionDiscard; beyond that the stream is given up.
func readOption(r io.Reader) (option, error) {
	var h [optionHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return option{}, err
	}
	if binary.BigEndian.Uint64(h[0:]) != IHaveOpt {
		return option{}, fmt.Errorf("%w in option header", errBadMagic)
	}
	o := option{Opt: Opt(binary.BigEndian.Uint32(h[8:]))}
	n := binary.BigEndian.Uint32(h[12:])
	switch {
	case n > maxOptionDiscard:
		return option{}, fmt.Errorf("%w: option data of %d bytes", errTooLong, n)
	case n > maxOptionLen:
		if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
			return option{}, err
		}
		return option{}, optionTooBig{o.Opt}
	}
	o.Data = make([]byte, n)
	_, err := io.ReadFull(r, o.Data)
	return o, err
}

// optionReply is one reply of the server to an option.
type optionReply struct {
	Opt  Opt
	Type Rep
	Data []byte
}

const optionReplyHeaderLen = 20

func (r optionReply) encode() []byte {
	b := make([]byte, optionReplyHeaderLen+len(r.Data))
	binary.BigEndian.PutUint64(b[0:], RepMagic)
	binary.BigEndian.PutUint32(b[8:], uint32(r.Opt))
	binary.BigEndian.PutUint32(b[12:], uint32(r.Type))
	binary.BigEndian.PutUint32(b[16:], uint32(len(r.Data)))
	copy(b[20:], r.Data)
	return b
}

// readOptionReply reads one option reply; data over maxReplyLen is refused.
func readOptionReply(r io.Reader) (optionReply, error) {
	var h [optionReplyHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return optionReply{}, err
	}
	if binary.BigEndian.Uint64(h[0:]) != RepMagic {
		return optionReply{}, fmt.Errorf("%w in option reply", errBadMagic)
	}
	rep := optionReply{Opt: Opt(binary.BigEndian.Uint32(h[8:])), Type: Rep(binary.BigEndian.Uint32(h[12:]))}
	n := binary.BigEndian.Uint32(h[16:])
	if n > maxReplyLen {
		return optionReply{}, fmt.Errorf("%w: option reply of %d bytes", errTooLong, n)
	}
	rep.Data = make([]byte, n)
	_, err := io.ReadFull(r, rep.Data)
	return rep, err
}

// infoRequest is the data of NBD_OPT_INFO and NBD_OPT_GO.
type infoRequest struct {
	Name  string
	Infos []Info
}

func (q infoRequest) encode() []byte {
	b := make([]byte, 4+len(q.Name)+2+2*len(q.Infos))
	binary.BigEndian.PutUint32(b[0:], uint32(len(q.Name)))
	copy(b[4:], q.Name)
	p := b[4+len(q.Name):]
	binary.BigEndian.PutUint16(p[0:], uint16(len(q.Infos)))
	for i, info := range q.Infos {
		binary.BigEndian.PutUint16(p[2+2*i:], uint16(info))
	}
	return b
}

func (q *infoRequest) decode(b []byte) error {
	if len(b) < 6 {
		return errMalformed
	}
	n := binary.BigEndian.Uint32(b[0:])
	if uint64(n) > uint64(len(b)-6) {
		return errMalformed
	}
	name, err := checkString(b[4 : 4+n])
	if err != nil {
		return err
	}
	rest := b[4+n:]
	count := int(binary.BigEndian.Uint16(rest[0:]))
	if len(rest) != 2+2*count {
		return errMalformed
	}
	q.Name, q.Infos = name, make([]Info, count)
	for i := range q.Infos {
		q.Infos[i] = Info(binary.BigEndian.Uint16(rest[2+2*i:]))
	}
	return nil
}

// checkString applies the spec's rules for strings: at most MaxStringLen
// bytes, UTF-8, no NUL.
func checkString(b []byte) (string, error) {
	if len(b) > MaxStringLen {
		return "", errTooLong
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%w: string is not UTF-8", errMalformed)
	}
	for _, c := range b {
		if c == 0 {
			return "", fmt.Errorf("%w: string holds NUL", errMalformed)
		}
	}
	return string(b), nil
}

// exportInfo is NBD_INFO_EXPORT (and the answer to NBD_OPT_EXPORT_NAME).
type exportInfo struct {
	Size  uint64
	Flags TransmissionFlags
}

func (e exportInfo) encodeInfo() []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[0:], uint16(InfoExport))
	binary.BigEndian.PutUint64(b[2:], e.Size)
	binary.BigEndian.PutUint16(b[10:], uint16(e.Flags))
	return b
}

// encodeExportName is the answer to NBD_OPT_EXPORT_NAME: size, flags and,
// unless the client set NBD_FLAG_C_NO_ZEROES, 124 zero bytes.
func (e exportInfo) encodeExportName(noZeroes bool) []byte {
	n := 10
	if !noZeroes {
		n += 124
	}
	b := make([]byte, n)
	binary.BigEndian.PutUint64(b[0:], e.Size)
	binary.BigEndian.PutUint16(b[8:], uint16(e.Flags))
	return b
}

// blockSizeInfo is NBD_INFO_BLOCK_SIZE.
type blockSizeInfo struct {
	Min, Preferred, Max uint32
}

func (s blockSizeInfo) encodeInfo() []byte {
	b := make([]byte, 14)
	binary.BigEndian.PutUint16(b[0:], uint16(InfoBlockSize))
	binary.BigEndian.PutUint32(b[2:], s.Min)
	binary.BigEndian.PutUint32(b[6:], s.Preferred)
	binary.BigEndian.PutUint32(b[10:], s.Max)
	return b
}

// valid applies the spec's constraints on advertised block sizes.
func (s blockSizeInfo) valid() bool {
	pow2 := func(v uint32) bool { return v != 0 && v&(v-1) == 0 }
	return pow2(s.Min) && s.Min <= 1<<16 && pow2(s.Preferred) &&
		s.Preferred >= max(s.Min, 512) && s.Max >= s.Preferred
}

// encodeStringInfo is NBD_INFO_NAME or NBD_INFO_DESCRIPTION.
func encodeStringInfo(t Info, s string) []byte {
	b := make([]byte, 2+len(s))
	binary.BigEndian.PutUint16(b, uint16(t))
	copy(b[2:], s)
	return b
}

// decodeInfo reads the data of an NBD_REP_INFO into e; unknown types are
// ignored as the spec requires.
func decodeInfo(b []byte, e *ExportInfo) error {
	if len(b) < 2 {
		return errMalformed
	}
	switch t, p := Info(binary.BigEndian.Uint16(b)), b[2:]; t {
	case InfoExport:
		if len(p) != 10 {
			return errMalformed
		}
		e.Size, e.Flags = binary.BigEndian.Uint64(p), TransmissionFlags(binary.BigEndian.Uint16(p[8:]))
	case InfoBlockSize:
		if len(p) != 12 {
			return errMalformed
		}
		s := blockSizeInfo{binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:]), binary.BigEndian.Uint32(p[8:])}
		if !s.valid() {
			return fmt.Errorf("%w: block sizes %+v", errMalformed, s)
		}
		e.MinBlockSize, e.PreferredBlockSize, e.MaxPayloadSize = s.Min, s.Preferred, s.Max
	case InfoName, InfoDescription:
		s, err := checkString(p)
		if err != nil {
			return err
		}
		if t == InfoName {
			e.Name = s
		} else {
			e.Description = s
		}
	}
	return nil
}

// serverEntry is the data of NBD_REP_SERVER: a name and an optional description.
type serverEntry struct {
	Name, Description string
}

func (s serverEntry) encode() []byte {
	b := make([]byte, 4+len(s.Name)+len(s.Description))
	binary.BigEndian.PutUint32(b, uint32(len(s.Name)))
	copy(b[4:], s.Name)
	copy(b[4+len(s.Name):], s.Description)
	return b
}

func (s *serverEntry) decode(b []byte) error {
	if len(b) < 4 || uint64(binary.BigEndian.Uint32(b)) > uint64(len(b)-4) {
		return errMalformed
	}
	n := binary.BigEndian.Uint32(b)
	name, err := checkString(b[4 : 4+n])
	if err != nil {
		return err
	}
	desc, err := checkString(b[4+n:])
	if err != nil {
		return err
	}
	s.Name, s.Description = name, desc
	return nil
}

// request is the header of a transmission request; a WRITE's payload follows
// it on the wire and is read separately.
type request struct {
	Flags  CmdFlags
	Type   Cmd
	Handle uint64
	Offset uint64
	Length uint32
}

const requestLen = 28

func (q request) encode(b []byte) {
	binary.BigEndian.PutUint32(b[0:], RequestMagic)
	binary.BigEndian.PutUint16(b[4:], uint16(q.Flags))
	binary.BigEndian.PutUint16(b[6:], uint16(q.Type))
	binary.BigEndian.PutUint64(b[8:], q.Handle)
	binary.BigEndian.PutUint64(b[16:], q.Offset)
	binary.BigEndian.PutUint32(b[24:], q.Length)
}

func (q *request) decode(b []byte) error {
	if binary.BigEndian.Uint32(b) != RequestMagic {
		return fmt.Errorf("%w in request (0x%08x)", errBadMagic, binary.BigEndian.Uint32(b))
	}
	q.Flags = CmdFlags(binary.BigEndian.Uint16(b[4:]))
	q.Type = Cmd(binary.BigEndian.Uint16(b[6:]))
	q.Handle = binary.BigEndian.Uint64(b[8:])
	q.Offset = binary.BigEndian.Uint64(b[16:])
	q.Length = binary.BigEndian.Uint32(b[24:])
	return nil
}

// simpleReply is the header of a simple reply; a successful READ's data
// follows it.
type simpleReply struct {
	Errno  Errno
	Handle uint64
}

const simpleReplyLen = 16

func (r simpleReply) encode(b []byte) {
	binary.BigEndian.PutUint32(b[0:], SimpleReplyMagic)
	binary.BigEndian.PutUint32(b[4:], uint32(r.Errno))
	binary.BigEndian.PutUint64(b[8:], r.Handle)
}

func (r *simpleReply) decode(b []byte) error {
	switch m := binary.BigEndian.Uint32(b); m {
	case SimpleReplyMagic:
	case StructuredReplyMagic:
		return fmt.Errorf("%w: structured reply, never negotiated", errMalformed)
	default:
		return fmt.Errorf("%w in reply (0x%08x)", errBadMagic, m)
	}
	r.Errno = Errno(binary.BigEndian.Uint32(b[4:]))
	r.Handle = binary.BigEndian.Uint64(b[8:])
	return nil
}
