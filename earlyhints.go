package fcgi

// EarlyHintsParam is the FastCGI parameter with which a web server announces
// that it follows the Early Hints convention of docs/early-hints.md: with the
// value "1", it passes an application's interim header blocks (Status: 103
// before the final header) on to its client as interim responses. fcgikit's
// Gateway sends it for clients that can take an interim response (HTTP/1.1
// and later), and fcgikit's Server writes interim blocks only for requests
// that carry it, since to any other web server the first block would be the
// whole response. A client header cannot forge it: headers arrive as HTTP_*
// parameters. A PHP application checks $_SERVER['FCGI_EARLY_HINTS'] before it
// sends a 103 block; a Client.Do caller that passes interim responses on sets
// it in Request.Params.
const EarlyHintsParam = "FCGI_EARLY_HINTS"
