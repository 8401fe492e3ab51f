package fcgicaddy

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/rewrite"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterDirective("php_fcgikit", parsePHPFcgikit)
	// Where php_fastcgi is, so that no "order" line is needed.
	httpcaddyfile.RegisterDirectiveOrder("php_fcgikit", httpcaddyfile.After, "php_fastcgi")
}

// UnmarshalCaddyfile reads the transport's block:
//
//	transport fcgikit {
//		root <path>
//		split <at...>
//		env <key> <value>
//		resolve_root_symlink
//		dial_timeout <duration>
//		read_timeout <duration>
//		write_timeout <duration>
//		capture_stderr
//		max_conns <n>
//		max_idle_conns <n>
//		keepalive_timeout <duration>
//		multiplex off|on|auto
//		body_memory <size>
//		max_total_memory <size>|off
//		max_body <size>|off
//		temp_dir <path>
//	}
func (t *Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the transport's name
	for d.NextBlock(0) {
		name := d.Val()
		known, err := t.option(d, name, d.RemainingArgs())
		if err != nil {
			return err
		}
		if !known {
			return d.Errf("unrecognized subdirective %s", name)
		}
	}
	return nil
}

// option sets the transport option name from args, and reports whether
// name is one.
func (t *Transport) option(d *caddyfile.Dispenser, name string, args []string) (bool, error) {
	one := func() (string, error) {
		if len(args) != 1 {
			return "", d.ArgErr()
		}
		return args[0], nil
	}
	duration := func() (caddy.Duration, error) {
		v, err := one()
		if err != nil {
			return 0, err
		}
		dur, err := caddy.ParseDuration(v)
		if err != nil {
			return 0, d.Errf("bad %s value %s: %v", name, v, err)
		}
		return caddy.Duration(dur), nil
	}
	integer := func() (int, error) {
		v, err := one()
		if err != nil {
			return 0, err
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, d.Errf("bad %s value %s: %v", name, v, err)
		}
		return n, nil
	}
	size := func() (int64, error) {
		v, err := one()
		if err != nil {
			return 0, err
		}
		n, err := humanize.ParseBytes(v)
		if err != nil || n == 0 || n > 1<<62 {
			return 0, d.Errf("bad %s value %s", name, v)
		}
		return int64(n), nil
	}
	var err error
	switch name {
	case "root":
		t.Root, err = one()
	case "split":
		if len(args) == 0 {
			return true, d.ArgErr()
		}
		t.SplitPath = args
	case "env":
		if len(args) != 2 {
			return true, d.ArgErr()
		}
		if t.EnvVars == nil {
			t.EnvVars = make(map[string]string)
		}
		t.EnvVars[args[0]] = args[1]
	case "resolve_root_symlink":
		if len(args) != 0 {
			return true, d.ArgErr()
		}
		t.ResolveRootSymlink = true
	case "capture_stderr":
		if len(args) != 0 {
			return true, d.ArgErr()
		}
		t.CaptureStderr = true
	case "dial_timeout":
		t.DialTimeout, err = duration()
	case "read_timeout":
		t.ReadTimeout, err = duration()
	case "write_timeout":
		t.WriteTimeout, err = duration()
	case "keepalive_timeout":
		t.KeepaliveTimeout, err = duration()
	case "max_conns":
		t.MaxConns, err = integer()
	case "max_idle_conns":
		t.MaxIdleConns, err = integer()
	case "multiplex":
		t.Multiplex, err = one()
		if err == nil {
			if _, err = t.multiplexMode(); err != nil {
				err = d.Err(err.Error())
			}
		}
	case "body_memory":
		t.BodyMemory, err = size()
	case "max_total_memory":
		if len(args) == 1 && args[0] == "off" {
			t.MaxTotalMemory = -1
		} else {
			t.MaxTotalMemory, err = size()
		}
	case "max_body":
		if len(args) == 1 && args[0] == "off" {
			t.MaxBody = -1
		} else {
			t.MaxBody, err = size()
		}
	case "temp_dir":
		t.TempDir, err = one()
	default:
		return false, nil
	}
	return true, err
}

// parsePHPFcgikit expands php_fcgikit as php_fastcgi expands, with the
// fcgikit transport:
//
//	php_fcgikit [<matcher>] <php-fpm_gateways...> {
//		root <path>
//		split <at...>
//		index <filename>|off
//		try_files <files...>
//		env <key> <value>
//		... the other options of the fcgikit transport
//		... the subdirectives of reverse_proxy
//	}
//
// that is, a route that redirects a directory to its canonical path with
// a trailing slash when it has an index file, a rewrite through
// try_files {path} {path}/index.php index.php, and reverse_proxy to the
// gateways for paths ending in a split extension (.php).
func parsePHPFcgikit(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	if !h.Next() {
		return nil, h.ArgErr()
	}
	transport := Transport{}
	extensions := []string{".php"}
	indexFile := "index.php"
	var tryFiles []string

	userMatcherSet, err := h.ExtractMatcherSet()
	if err != nil {
		return nil, err
	}

	// The options are taken out of the tokens as they are read, so that
	// reverse_proxy's unmarshaler, which reads the rest, does not see them.
	d := h.NewFromNextSegment()
	for d.Next() {
		for d.NextBlock(0) {
			if d.Nesting() != 1 {
				continue // inside a reverse_proxy subdirective's block
			}
			name := d.Val()
			var args []string
			switch name {
			case "split":
				extensions = d.RemainingArgs()
				args = extensions
				if len(args) == 0 {
					return nil, d.ArgErr()
				}
			case "index":
				args = d.RemainingArgs()
				if len(args) != 1 {
					return nil, d.ArgErr()
				}
				indexFile = args[0]
			case "try_files":
				args = d.RemainingArgs()
				if len(args) == 0 {
					return nil, d.ArgErr()
				}
				tryFiles = args
			default:
				if !isTransportOption(name) {
					continue
				}
				args = d.RemainingArgs()
				if _, err := transport.option(d, name, args); err != nil {
					return nil, err
				}
			}
			d.DeleteN(len(args) + 1)
		}
	}
	d.Reset()

	transport.SplitPath = extensions
	routes := caddyhttp.RouteList{}
	if indexFile != "off" {
		dirIndex := "{http.request.uri.path}/" + indexFile
		tryPolicy := "first_exist_fallback"
		dirRedir := true
		if len(tryFiles) == 0 {
			tryFiles = []string{"{http.request.uri.path}", dirIndex, indexFile}
		} else {
			if !strings.HasSuffix(tryFiles[len(tryFiles)-1], ".php") {
				tryPolicy = "" // first_exist: the last one is no fallback script
			}
			dirRedir = slices.Contains(tryFiles, dirIndex)
		}
		if dirRedir {
			// A directory with an index script, asked for without its
			// trailing slash, is redirected to it. The Location is relative
			// to the last segment of the path the client sent, so that it
			// cannot lead to another host whatever that path holds.
			redirect := caddyhttp.StaticResponse{
				StatusCode: caddyhttp.WeakString(strconv.Itoa(http.StatusPermanentRedirect)),
				Headers: http.Header{"Location": {
					"./{http.request.orig_uri.path.file_escaped}/{http.request.orig_uri.prefixed_query}",
				}},
			}
			routes = append(routes, caddyhttp.Route{
				MatcherSetsRaw: []caddy.ModuleMap{{
					"file": h.JSON(fileserver.MatchFile{TryFiles: []string{dirIndex}}),
					"not": h.JSON(caddyhttp.MatchNot{MatcherSetsRaw: []caddy.ModuleMap{{
						"path": h.JSON(caddyhttp.MatchPath{"*/"}),
					}}}),
				}},
				HandlersRaw: []json.RawMessage{caddyconfig.JSONModuleObject(redirect, "handler", "static_response", nil)},
			})
		}
		routes = append(routes, caddyhttp.Route{
			MatcherSetsRaw: []caddy.ModuleMap{{
				"file": h.JSON(fileserver.MatchFile{TryFiles: tryFiles, TryPolicy: tryPolicy, SplitPath: extensions}),
			}},
			HandlersRaw: []json.RawMessage{caddyconfig.JSONModuleObject(
				rewrite.Rewrite{URI: "{http.matchers.file.relative}"}, "handler", "rewrite", nil)},
		})
	}

	var paths []string
	for _, ext := range extensions {
		paths = append(paths, "*"+ext)
	}
	proxy := &reverseproxy.Handler{
		TransportRaw: caddyconfig.JSONModuleObject(transport, "protocol", "fcgikit", nil),
	}
	d.Next() // the directive's name
	if err := proxy.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	if err := proxy.FinalizeUnmarshalCaddyfile(h); err != nil {
		return nil, err
	}
	routes = append(routes, caddyhttp.Route{
		MatcherSetsRaw: []caddy.ModuleMap{{"path": h.JSON(paths)}},
		HandlersRaw:    []json.RawMessage{caddyconfig.JSONModuleObject(proxy, "handler", "reverse_proxy", nil)},
	})

	sub := caddyhttp.Subroute{Routes: routes}
	if userMatcherSet != nil {
		// The user's matcher guards the whole group.
		return []httpcaddyfile.ConfigValue{{
			Class: "route",
			Value: caddyhttp.Route{
				MatcherSetsRaw: []caddy.ModuleMap{userMatcherSet},
				HandlersRaw:    []json.RawMessage{caddyconfig.JSONModuleObject(sub, "handler", "subroute", nil)},
			},
		}}, nil
	}
	// A bare subroute keeps the routes together, in this order, without
	// adding a subroute handler to the output.
	return []httpcaddyfile.ConfigValue{{Class: "route", Value: sub}}, nil
}

// isTransportOption reports whether name is an option of the fcgikit
// transport that php_fcgikit takes directly.
func isTransportOption(name string) bool {
	switch name {
	case "root", "env", "resolve_root_symlink", "capture_stderr",
		"dial_timeout", "read_timeout", "write_timeout", "keepalive_timeout",
		"max_conns", "max_idle_conns", "multiplex", "body_memory", "max_total_memory", "max_body", "temp_dir":
		return true
	}
	return false
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Transport)(nil)
