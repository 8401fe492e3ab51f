package wire

// Name-value pairs (§3.4). A pair is nameLength, valueLength, name, value;
// each length is one byte when below 128, otherwise four bytes, big-endian,
// with the top bit set. Pairs are the content of PARAMS, GET_VALUES and
// GET_VALUES_RESULT streams; in a stream a pair may straddle records, so the
// decoder works on the stream's concatenated bytes.

// MaxPairPart is the largest length a four-byte length can declare (2^31-1).
const MaxPairPart = 1<<31 - 1

// PairLen returns the encoded length of the pair name, value.
func PairLen(name, value string) int {
	return PairSize(len(name), len(value))
}

// PairSize returns the encoded length of a pair whose name and value are
// nameLen and valueLen bytes long.
func PairSize(nameLen, valueLen int) int {
	return lenLen(nameLen) + lenLen(valueLen) + nameLen + valueLen
}

func lenLen(n int) int {
	if n < 128 {
		return 1
	}
	return 4
}

func appendLen(dst []byte, n int) []byte {
	if n < 128 {
		return append(dst, byte(n))
	}
	return append(dst, byte(n>>24)|0x80, byte(n>>16), byte(n>>8), byte(n))
}

// AppendPair appends the encoding of one name-value pair to dst. Lengths
// above MaxPairPart cannot be encoded; the caller must not pass them.
func AppendPair(dst []byte, name, value string) []byte {
	dst = appendLen(dst, len(name))
	dst = appendLen(dst, len(value))
	dst = append(dst, name...)
	return append(dst, value...)
}

// AppendPairLens appends the two lengths that start a pair; the caller then
// appends exactly nameLen bytes of name and valueLen of value. It lets a
// name be written as it is computed (a CGI variable from an HTTP field
// name, say) instead of being built as a string first.
func AppendPairLens(dst []byte, nameLen, valueLen int) []byte {
	return appendLen(appendLen(dst, nameLen), valueLen)
}

// bytesOrString lets one decoder serve both a received []byte stream and a
// string made from it once, whose substrings then cost no allocation.
type bytesOrString interface{ ~string | ~[]byte }

// NextPair decodes the first pair of b and returns it with the bytes that
// follow. It returns ErrPairLength if b holds only part of a pair, and never
// allocates: name and value alias b.
func NextPair[T bytesOrString](b T) (name, value, rest T, err error) {
	nl, n, ok := readLen(b)
	if !ok {
		return name, value, b, ErrPairLength
	}
	b = b[n:]
	vl, n, ok := readLen(b)
	if !ok {
		return name, value, b, ErrPairLength
	}
	b = b[n:]
	// nl and vl are at most 2^31-1 each, so the sum cannot overflow an int
	// on 64-bit platforms; on 32-bit ones compare one at a time.
	if nl > len(b) || vl > len(b)-nl {
		return name, value, b, ErrPairLength
	}
	return b[:nl], b[nl : nl+vl], b[nl+vl:], nil
}

func readLen[T bytesOrString](b T) (n, size int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	if b[0] < 0x80 {
		return int(b[0]), 1, true
	}
	if len(b) < 4 {
		return 0, 0, false
	}
	return int(b[0]&0x7f)<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3]), 4, true
}

// ForEachPair calls fn for each pair in b, in order, stopping early if fn
// returns false. It returns ErrPairLength if b ends inside a pair.
func ForEachPair[T bytesOrString](b T, fn func(name, value T) bool) error {
	for len(b) > 0 {
		name, value, rest, err := NextPair(b)
		if err != nil {
			return err
		}
		if !fn(name, value) {
			return nil
		}
		b = rest
	}
	return nil
}
