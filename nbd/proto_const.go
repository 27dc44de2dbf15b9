package nbd

import (
	"strconv"
	"strings"
)

// Magic numbers, named as in the spec.
const (
	NBDMagic             uint64 = 0x4e42444d41474943 // "NBDMAGIC", INIT_PASSWD
	IHaveOpt             uint64 = 0x49484156454F5054 // "IHAVEOPT", newstyle and option magic
	RepMagic             uint64 = 0x3e889045565a9    // option reply magic
	RequestMagic         uint32 = 0x25609513         // NBD_REQUEST_MAGIC
	SimpleReplyMagic     uint32 = 0x67446698         // NBD_SIMPLE_REPLY_MAGIC
	StructuredReplyMagic uint32 = 0x668e33ef         // NBD_STRUCTURED_REPLY_MAGIC
)

// Size limits. Every length read from the wire is checked against one of these
// before anything is allocated.
const (
	// MaxPayloadSize is the largest READ or WRITE payload the server accepts and
	// advertises (NBD_INFO_BLOCK_SIZE maximum payload): 32 MiB, the spec's default.
	MaxPayloadSize = 32 << 20
	// MaxStringLen is the spec's limit for export names, descriptions and messages.
	MaxStringLen = 4096
	// maxOptionLen bounds the data of one option the server reads into memory.
	maxOptionLen = 64 << 10
	// maxOptionDiscard bounds the data of an option the server skips without
	// reading it into memory (answered NBD_REP_ERR_TOO_BIG); beyond it the
	// connection is closed.
	maxOptionDiscard = 16 << 20
	// maxWriteDiscard bounds the payload of an oversized NBD_CMD_WRITE that the
	// server reads and drops to stay in sync (answered NBD_EINVAL); beyond it the
	// connection is closed.
	maxWriteDiscard = 4 * MaxPayloadSize
	// maxReplyLen bounds the data of one option reply the client reads.
	maxReplyLen = 64 << 10
)

// HandshakeFlags are the 16 bits the server sends after IHAVEOPT.
type HandshakeFlags uint16

// Handshake flags.
const (
	FlagFixedNewstyle HandshakeFlags = 1 << 0 // NBD_FLAG_FIXED_NEWSTYLE
	FlagNoZeroes      HandshakeFlags = 1 << 1 // NBD_FLAG_NO_ZEROES
)

func (f HandshakeFlags) String() string {
	return flagString(uint64(f), []string{"NBD_FLAG_FIXED_NEWSTYLE", "NBD_FLAG_NO_ZEROES"})
}

// ClientFlags are the 32 bits the client answers the handshake flags with.
type ClientFlags uint32

// Client flags.
const (
	FlagCFixedNewstyle ClientFlags = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	FlagCNoZeroes      ClientFlags = 1 << 1 // NBD_FLAG_C_NO_ZEROES
)

func (f ClientFlags) String() string {
	return flagString(uint64(f), []string{"NBD_FLAG_C_FIXED_NEWSTYLE", "NBD_FLAG_C_NO_ZEROES"})
}

// TransmissionFlags describe an export (NBD_INFO_EXPORT, NBD_OPT_EXPORT_NAME).
type TransmissionFlags uint16

// Transmission flags.
const (
	FlagHasFlags           TransmissionFlags = 1 << 0  // NBD_FLAG_HAS_FLAGS
	FlagReadOnly           TransmissionFlags = 1 << 1  // NBD_FLAG_READ_ONLY
	FlagSendFlush          TransmissionFlags = 1 << 2  // NBD_FLAG_SEND_FLUSH
	FlagSendFUA            TransmissionFlags = 1 << 3  // NBD_FLAG_SEND_FUA
	FlagRotational         TransmissionFlags = 1 << 4  // NBD_FLAG_ROTATIONAL
	FlagSendTrim           TransmissionFlags = 1 << 5  // NBD_FLAG_SEND_TRIM
	FlagSendWriteZeroes    TransmissionFlags = 1 << 6  // NBD_FLAG_SEND_WRITE_ZEROES
	FlagSendDF             TransmissionFlags = 1 << 7  // NBD_FLAG_SEND_DF
	FlagCanMultiConn       TransmissionFlags = 1 << 8  // NBD_FLAG_CAN_MULTI_CONN
	FlagSendResize         TransmissionFlags = 1 << 9  // NBD_FLAG_SEND_RESIZE
	FlagSendCache          TransmissionFlags = 1 << 10 // NBD_FLAG_SEND_CACHE
	FlagSendFastZero       TransmissionFlags = 1 << 11 // NBD_FLAG_SEND_FAST_ZERO
	FlagBlockStatusPayload TransmissionFlags = 1 << 12 // NBD_FLAG_BLOCK_STATUS_PAYLOAD
)

func (f TransmissionFlags) String() string {
	return flagString(uint64(f), []string{
		"NBD_FLAG_HAS_FLAGS", "NBD_FLAG_READ_ONLY", "NBD_FLAG_SEND_FLUSH",
		"NBD_FLAG_SEND_FUA", "NBD_FLAG_ROTATIONAL", "NBD_FLAG_SEND_TRIM",
		"NBD_FLAG_SEND_WRITE_ZEROES", "NBD_FLAG_SEND_DF", "NBD_FLAG_CAN_MULTI_CONN",
		"NBD_FLAG_SEND_RESIZE", "NBD_FLAG_SEND_CACHE", "NBD_FLAG_SEND_FAST_ZERO",
		"NBD_FLAG_BLOCK_STATUS_PAYLOAD",
	})
}

// Opt is an option type of the handshake phase.
type Opt uint32

// Option types.
const (
	OptExportName      Opt = 1  // NBD_OPT_EXPORT_NAME
	OptAbort           Opt = 2  // NBD_OPT_ABORT
	OptList            Opt = 3  // NBD_OPT_LIST
	OptPeekExport      Opt = 4  // NBD_OPT_PEEK_EXPORT (withdrawn)
	OptStartTLS        Opt = 5  // NBD_OPT_STARTTLS
	OptInfo            Opt = 6  // NBD_OPT_INFO
	OptGo              Opt = 7  // NBD_OPT_GO
	OptStructuredReply Opt = 8  // NBD_OPT_STRUCTURED_REPLY
	OptListMetaContext Opt = 9  // NBD_OPT_LIST_META_CONTEXT
	OptSetMetaContext  Opt = 10 // NBD_OPT_SET_META_CONTEXT
	OptExtendedHeaders Opt = 11 // NBD_OPT_EXTENDED_HEADERS
)

func (o Opt) String() string {
	names := []string{"", "NBD_OPT_EXPORT_NAME", "NBD_OPT_ABORT", "NBD_OPT_LIST",
		"NBD_OPT_PEEK_EXPORT", "NBD_OPT_STARTTLS", "NBD_OPT_INFO", "NBD_OPT_GO",
		"NBD_OPT_STRUCTURED_REPLY", "NBD_OPT_LIST_META_CONTEXT",
		"NBD_OPT_SET_META_CONTEXT", "NBD_OPT_EXTENDED_HEADERS"}
	return enumString(uint64(o), names, "NBD_OPT_")
}

// Rep is an option reply type. Error replies have bit 31 set.
type Rep uint32

const repErr Rep = 1 << 31

// Option reply types.
const (
	RepAck              Rep = 1           // NBD_REP_ACK
	RepServer           Rep = 2           // NBD_REP_SERVER
	RepInfo             Rep = 3           // NBD_REP_INFO
	RepMetaContext      Rep = 4           // NBD_REP_META_CONTEXT
	RepErrUnsup         Rep = repErr + 1  // NBD_REP_ERR_UNSUP
	RepErrPolicy        Rep = repErr + 2  // NBD_REP_ERR_POLICY
	RepErrInvalid       Rep = repErr + 3  // NBD_REP_ERR_INVALID
	RepErrPlatform      Rep = repErr + 4  // NBD_REP_ERR_PLATFORM
	RepErrTLSReqd       Rep = repErr + 5  // NBD_REP_ERR_TLS_REQD
	RepErrUnknown       Rep = repErr + 6  // NBD_REP_ERR_UNKNOWN
	RepErrShutdown      Rep = repErr + 7  // NBD_REP_ERR_SHUTDOWN
	RepErrBlockSizeReqd Rep = repErr + 8  // NBD_REP_ERR_BLOCK_SIZE_REQD
	RepErrTooBig        Rep = repErr + 9  // NBD_REP_ERR_TOO_BIG
	RepErrExtHeaderReqd Rep = repErr + 10 // NBD_REP_ERR_EXT_HEADER_REQD
)

// IsErr reports whether r is an error reply.
func (r Rep) IsErr() bool { return r&repErr != 0 }

func (r Rep) String() string {
	if r.IsErr() {
		names := []string{"", "NBD_REP_ERR_UNSUP", "NBD_REP_ERR_POLICY",
			"NBD_REP_ERR_INVALID", "NBD_REP_ERR_PLATFORM", "NBD_REP_ERR_TLS_REQD",
			"NBD_REP_ERR_UNKNOWN", "NBD_REP_ERR_SHUTDOWN", "NBD_REP_ERR_BLOCK_SIZE_REQD",
			"NBD_REP_ERR_TOO_BIG", "NBD_REP_ERR_EXT_HEADER_REQD"}
		return enumString(uint64(r&^repErr), names, "NBD_REP_ERR_")
	}
	names := []string{"", "NBD_REP_ACK", "NBD_REP_SERVER", "NBD_REP_INFO", "NBD_REP_META_CONTEXT"}
	return enumString(uint64(r), names, "NBD_REP_")
}

// Info is an information type of NBD_OPT_INFO and NBD_OPT_GO.
type Info uint16

// Information types.
const (
	InfoExport      Info = 0 // NBD_INFO_EXPORT
	InfoName        Info = 1 // NBD_INFO_NAME
	InfoDescription Info = 2 // NBD_INFO_DESCRIPTION
	InfoBlockSize   Info = 3 // NBD_INFO_BLOCK_SIZE
)

func (i Info) String() string {
	names := []string{"NBD_INFO_EXPORT", "NBD_INFO_NAME", "NBD_INFO_DESCRIPTION", "NBD_INFO_BLOCK_SIZE"}
	return enumString(uint64(i), names, "NBD_INFO_")
}

// Cmd is a request type of the transmission phase.
type Cmd uint16

// Request types.
const (
	CmdRead        Cmd = 0 // NBD_CMD_READ
	CmdWrite       Cmd = 1 // NBD_CMD_WRITE
	CmdDisc        Cmd = 2 // NBD_CMD_DISC
	CmdFlush       Cmd = 3 // NBD_CMD_FLUSH
	CmdTrim        Cmd = 4 // NBD_CMD_TRIM
	CmdCache       Cmd = 5 // NBD_CMD_CACHE
	CmdWriteZeroes Cmd = 6 // NBD_CMD_WRITE_ZEROES
	CmdBlockStatus Cmd = 7 // NBD_CMD_BLOCK_STATUS
	CmdResize      Cmd = 8 // NBD_CMD_RESIZE
)

func (c Cmd) String() string {
	names := []string{"NBD_CMD_READ", "NBD_CMD_WRITE", "NBD_CMD_DISC", "NBD_CMD_FLUSH",
		"NBD_CMD_TRIM", "NBD_CMD_CACHE", "NBD_CMD_WRITE_ZEROES", "NBD_CMD_BLOCK_STATUS",
		"NBD_CMD_RESIZE"}
	return enumString(uint64(c), names, "NBD_CMD_")
}

// CmdFlags are the command flags of a request.
type CmdFlags uint16

// Command flags.
const (
	CmdFlagFUA        CmdFlags = 1 << 0 // NBD_CMD_FLAG_FUA
	CmdFlagNoHole     CmdFlags = 1 << 1 // NBD_CMD_FLAG_NO_HOLE
	CmdFlagDF         CmdFlags = 1 << 2 // NBD_CMD_FLAG_DF
	CmdFlagReqOne     CmdFlags = 1 << 3 // NBD_CMD_FLAG_REQ_ONE
	CmdFlagFastZero   CmdFlags = 1 << 4 // NBD_CMD_FLAG_FAST_ZERO
	CmdFlagPayloadLen CmdFlags = 1 << 5 // NBD_CMD_FLAG_PAYLOAD_LEN
)

func (f CmdFlags) String() string {
	return flagString(uint64(f), []string{"NBD_CMD_FLAG_FUA", "NBD_CMD_FLAG_NO_HOLE",
		"NBD_CMD_FLAG_DF", "NBD_CMD_FLAG_REQ_ONE", "NBD_CMD_FLAG_FAST_ZERO",
		"NBD_CMD_FLAG_PAYLOAD_LEN"})
}

// enumString names v from names (indexed by value), else prefix and the number.
func enumString(v uint64, names []string, prefix string) string {
	if v < uint64(len(names)) && names[v] != "" {
		return names[v]
	}
	return prefix + "UNKNOWN(" + strconv.FormatUint(v, 10) + ")"
}

// flagString joins the names of the bits set in v with "|"; unnamed bits are
// shown in hex; zero is "0".
func flagString(v uint64, names []string) string {
	if v == 0 {
		return "0"
	}
	var parts []string
	for i, name := range names {
		if v&(1<<i) != 0 {
			parts = append(parts, name)
			v &^= 1 << i
		}
	}
	if v != 0 {
		parts = append(parts, "0x"+strconv.FormatUint(v, 16))
	}
	return strings.Join(parts, "|")
}
