package fcgi

// The CGI response header rules shared by the server, which writes CGI
// headers, and the client, which parses them.

// validHeaderName reports whether name is an RFC 9110 token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 0x80 || tokenTable[c] == 0 {
			return false
		}
	}
	return true
}

// tokenTable marks the bytes allowed in an RFC 9110 token.
var tokenTable = func() (t [128]byte) {
	for c := '0'; c <= '9'; c++ {
		t[c] = 1
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = 1
		t[c-'a'+'A'] = 1
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = 1
	}
	return t
}()
