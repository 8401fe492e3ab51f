// Package wire is the FastCGI 1.0 wire format: record headers, record
// types, roles, protocol statuses, the fixed-size bodies of BEGIN_REQUEST,
// END_REQUEST and UNKNOWN_TYPE, name-value pairs, and a buffered record
// Reader and Writer that reuse their memory.
//
// Every other part of fcgikit (server, client, command) reads and writes
// FastCGI through this package and never touches raw bytes itself. Section
// numbers (§) refer to the FastCGI specification, version 1.0 (Open Market,
// 29 April 1996).
package wire

import (
	"errors"
	"fmt"
	"strconv"
)

// Version1 is the only FastCGI protocol version (§8, FCGI_VERSION_1).
const Version1 = 1

// HeaderLen is the length of a record header (§3.3, FCGI_HEADER_LEN).
const HeaderLen = 8

// MaxContent is the largest content a record can carry (§3.3).
const MaxContent = 65535

// MaxPadding is the largest padding a record can carry (§3.3).
const MaxPadding = 255

// MaxRecordLen is the largest record on the wire: header, content and padding.
const MaxRecordLen = HeaderLen + MaxContent + MaxPadding

// NullRequestID is the request ID of management records (§3.3, FCGI_NULL_REQUEST_ID).
const NullRequestID = 0

// Type is a record type (§3.3, §8).
type Type uint8

// Record types (§8).
const (
	TypeBeginRequest    Type = 1
	TypeAbortRequest    Type = 2
	TypeEndRequest      Type = 3
	TypeParams          Type = 4
	TypeStdin           Type = 5
	TypeStdout          Type = 6
	TypeStderr          Type = 7
	TypeData            Type = 8
	TypeGetValues       Type = 9
	TypeGetValuesResult Type = 10
	TypeUnknownType     Type = 11
)

var typeNames = [...]string{
	TypeBeginRequest:    "BEGIN_REQUEST",
	TypeAbortRequest:    "ABORT_REQUEST",
	TypeEndRequest:      "END_REQUEST",
	TypeParams:          "PARAMS",
	TypeStdin:           "STDIN",
	TypeStdout:          "STDOUT",
	TypeStderr:          "STDERR",
	TypeData:            "DATA",
	TypeGetValues:       "GET_VALUES",
	TypeGetValuesResult: "GET_VALUES_RESULT",
	TypeUnknownType:     "UNKNOWN_TYPE",
}

// String returns the spec's name for t without the FCGI_ prefix, so logs
// read like the specification.
func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "TYPE(" + strconv.Itoa(int(t)) + ")"
}

// IsManagement reports whether t is one of the management record types the
// spec defines (§3.3: GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE).
// Whether a record is a management record also depends on its request ID:
// any record with ID 0 is one.
func (t Type) IsManagement() bool {
	return t == TypeGetValues || t == TypeGetValuesResult || t == TypeUnknownType
}

// Role is the role of a request, carried in BEGIN_REQUEST (§5.1, §6).
type Role uint16

// Roles (§6).
const (
	RoleResponder  Role = 1
	RoleAuthorizer Role = 2
	RoleFilter     Role = 3
)

// String returns the spec's name for r.
func (r Role) String() string {
	switch r {
	case RoleResponder:
		return "RESPONDER"
	case RoleAuthorizer:
		return "AUTHORIZER"
	case RoleFilter:
		return "FILTER"
	}
	return "ROLE(" + strconv.Itoa(int(r)) + ")"
}

// FlagKeepConn in BEGIN_REQUEST's flags asks the application to keep the
// connection open after the request (§5.1, FCGI_KEEP_CONN).
const FlagKeepConn = 1

// ProtocolStatus is END_REQUEST's protocol-level status (§5.5).
type ProtocolStatus uint8

// Protocol statuses (§5.5).
const (
	StatusRequestComplete ProtocolStatus = 0
	StatusCantMpxConn     ProtocolStatus = 1
	StatusOverloaded      ProtocolStatus = 2
	StatusUnknownRole     ProtocolStatus = 3
)

// String returns the spec's name for s.
func (s ProtocolStatus) String() string {
	switch s {
	case StatusRequestComplete:
		return "REQUEST_COMPLETE"
	case StatusCantMpxConn:
		return "CANT_MPX_CONN"
	case StatusOverloaded:
		return "OVERLOADED"
	case StatusUnknownRole:
		return "UNKNOWN_ROLE"
	}
	return "STATUS(" + strconv.Itoa(int(s)) + ")"
}

// Names of the variables a GET_VALUES record may ask for (§4.1).
const (
	ValueMaxConns  = "FCGI_MAX_CONNS"
	ValueMaxReqs   = "FCGI_MAX_REQS"
	ValueMpxsConns = "FCGI_MPXS_CONNS"
)

// Header is a record header (§3.3). The reserved byte is not kept: the
// spec gives it no meaning, the Reader ignores it and the Writer sends 0.
type Header struct {
	Version       uint8  // always Version1 in a record the Reader returns
	Type          Type   // record type
	RequestID     uint16 // 0 for management records
	ContentLength uint16 // bytes of content, 0..65535
	PaddingLength uint8  // bytes of padding after the content, skipped
}

// String formats h for logs and error messages.
func (h Header) String() string {
	return fmt.Sprintf("%v id=%d len=%d pad=%d", h.Type, h.RequestID, h.ContentLength, h.PaddingLength)
}

// decodeHeader reads a header from the first HeaderLen bytes of b.
func decodeHeader(b []byte) Header {
	_ = b[HeaderLen-1]
	return Header{
		Version:       b[0],
		Type:          Type(b[1]),
		RequestID:     uint16(b[2])<<8 | uint16(b[3]),
		ContentLength: uint16(b[4])<<8 | uint16(b[5]),
		PaddingLength: b[6],
	}
}

// appendHeader appends the encoding of a version-1 header to dst.
func appendHeader(dst []byte, t Type, id uint16, contentLen, padLen int) []byte {
	return append(dst, Version1, byte(t), byte(id>>8), byte(id), byte(contentLen>>8), byte(contentLen), byte(padLen), 0)
}

// Record is one record as read by [Reader.Next]. Content aliases the
// Reader's buffer and is valid only until the next call to Next.
type Record struct {
	Header
	Content []byte // without padding; aliases the Reader's buffer
}

// BeginRequest is the body of a BEGIN_REQUEST record (§5.1).
type BeginRequest struct {
	Role  Role  // what the application is asked to do
	Flags uint8 // FlagKeepConn or 0
}

// KeepConn reports whether the web server asked to keep the connection.
func (b BeginRequest) KeepConn() bool { return b.Flags&FlagKeepConn != 0 }

// bodyLen is the length of a BEGIN_REQUEST body, and also of
// END_REQUEST and UNKNOWN_TYPE bodies (§5.1, §5.5, §4.2).
const bodyLen = 8

// ParseBeginRequest decodes a BEGIN_REQUEST body. The spec fixes its length
// at 8 bytes; anything else is refused with an error wrapping ErrBodyLength.
func ParseBeginRequest(content []byte) (BeginRequest, error) {
	if len(content) != bodyLen {
		return BeginRequest{}, bodyLengthError(TypeBeginRequest, len(content))
	}
	return BeginRequest{Role: Role(uint16(content[0])<<8 | uint16(content[1])), Flags: content[2]}, nil
}

// EndRequest is the body of an END_REQUEST record (§5.5).
type EndRequest struct {
	AppStatus      uint32         // the application's exit status, as a CGI program's
	ProtocolStatus ProtocolStatus // whether the request was served or refused
}

// ParseEndRequest decodes an END_REQUEST body, which must be 8 bytes long.
func ParseEndRequest(content []byte) (EndRequest, error) {
	if len(content) != bodyLen {
		return EndRequest{}, bodyLengthError(TypeEndRequest, len(content))
	}
	return EndRequest{
		AppStatus:      uint32(content[0])<<24 | uint32(content[1])<<16 | uint32(content[2])<<8 | uint32(content[3]),
		ProtocolStatus: ProtocolStatus(content[4]),
	}, nil
}

// ParseUnknownType decodes an UNKNOWN_TYPE body (§4.2) and returns the type
// the peer did not understand.
func ParseUnknownType(content []byte) (Type, error) {
	if len(content) != bodyLen {
		return 0, bodyLengthError(TypeUnknownType, len(content))
	}
	return Type(content[0]), nil
}

// Errors the Reader and the parsers return. Each names a way the peer broke
// the protocol; a connection that produced one should be closed.
var (
	// ErrVersion: a record header whose version is not 1.
	ErrVersion = errors.New("fcgi: unsupported record version")
	// ErrBodyLength: a fixed-size body (BEGIN_REQUEST, END_REQUEST,
	// UNKNOWN_TYPE) of the wrong length.
	ErrBodyLength = errors.New("fcgi: record body has the wrong length")
	// ErrPairLength: a name-value pair whose declared lengths run past the
	// bytes of its stream.
	ErrPairLength = errors.New("fcgi: name-value pair longer than its stream")
)

func bodyLengthError(t Type, n int) error {
	return fmt.Errorf("%w: %v body of %d bytes, want %d", ErrBodyLength, t, n, bodyLen)
}
