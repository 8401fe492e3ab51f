package fcgi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Filter returns a handler that serves the files under Root through the
// FastCGI application in the Filter role (§6.4 of the specification): the
// file the request path names is sent as FCGI_DATA, with FCGI_DATA_LAST_MOD
// and FCGI_DATA_LENGTH, the request body as STDIN, and the application's
// answer is the response. A template engine or a Markdown renderer is the
// typical application; it can answer 304 from FCGI_DATA_LAST_MOD without
// reading the file.
//
// The request gets the CGI environment of [Gateway], with SCRIPT_NAME the
// request path and SCRIPT_FILENAME the file. Paths are checked as for
// scripts: control bytes give 400, anything but a regular file inside
// Root gives 404, and a file the process may not read 403. Index,
// FrontController, ScriptExt and ServeStatic do not apply.
func (g *Gateway) Filter() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.stats.begin()
		defer g.stats.end()
		if g.Client == nil {
			g.fail(w, r, ErrNoBackend)
			return
		}
		rt, err := g.filterRoute(r.URL.Path)
		if err != nil {
			g.fail(w, r, err)
			return
		}
		f, fi, err := openRegular(rt.file)
		if err != nil {
			if !g.forbidden(w, r, err) {
				g.fail(w, r, noFile(r.URL.Path))
			}
			return
		}
		defer f.Close()
		// The length sent is the one declared, even if the file grows
		// meanwhile; a file that shrinks ends DATA short, which the
		// application can tell from FCGI_DATA_LENGTH.
		size := fi.Size()
		req := &Request{
			Role:    RoleFilter,
			Data:    io.NewSectionReader(f, 0, size),
			GetData: func() (io.Reader, error) { return io.NewSectionReader(f, 0, size), nil },
		}
		g.forward(w, r, rt, req, map[string]string{
			"FCGI_DATA_LAST_MOD": strconv.FormatInt(fi.ModTime().Unix(), 10),
			"FCGI_DATA_LENGTH":   strconv.FormatInt(size, 10),
		})
	})
}

type authVarsKey struct{}

// authorizerEnv removes from env, built for a request routed to rt, what
// an Authorizer is not sent (§6.3): CONTENT_LENGTH, PATH_INFO and
// SCRIPT_NAME, and SCRIPT_FILENAME when rt names no script.
func authorizerEnv(env *cgiEnv, rt route) {
	env.del("CONTENT_LENGTH")
	env.del("PATH_INFO")
	env.del("SCRIPT_NAME")
	if rt.script == "" {
		env.del("SCRIPT_FILENAME")
	}
}

// maxIgnoredBody is how much of a body nobody wants (an allowing
// authorizer's, a 304's) is read, and dropped, to keep its connection.
const maxIgnoredBody = 64 << 10

// Authorizer returns middleware that asks the FastCGI application behind g
// whether each request may reach next, in the Authorizer role (§6.3), the way
// lighttpd's "mode" => "authorizer" and Apache's mod_authnz_fcgi do.
//
// The application receives g's CGI environment, without CONTENT_LENGTH,
// PATH_INFO and SCRIPT_NAME, as the specification asks (and without
// SCRIPT_FILENAME when g's routing finds no script: next may serve the path
// otherwise), and no body. When it answers 200, each of its Variable-NAME
// headers is passed on: as a request header Variable-NAME for next, and, when
// next is a [Gateway] or a [Gateway.Filter], as the parameter NAME, in place
// of any the gateway computes (REMOTE_USER, say). Variable-* headers the
// client sent are removed first. Any other answer is sent to the client as it
// is. Errors reaching the application are answered as [Gateway] does.
func (g *Gateway) Authorizer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, err := g.route(r.URL.Path)
		var he *httpError
		if errors.As(err, &he) && he.code == http.StatusNotFound {
			// What next serves is next's business (a Filter, a handler of its
			// own): the authorizer decides on the path.
			rt, err = route{docURI: cleanURLPath(r.URL.Path)}, nil
		}
		if err != nil {
			g.fail(w, r, err)
			return
		}
		env := getEnv()
		*env = g.params(*env, r, rt, "")
		authorizerEnv(env, rt)
		if err := g.checkParams(*env); err != nil {
			putEnv(env)
			g.fail(w, r, err)
			return
		}
		req := &Request{Role: RoleAuthorizer, env: *env, Stderr: &stderrLog{log: g.logger(), r: r}}
		resp, err := g.Client.Do(r.Context(), req)
		putEnv(env)
		if err != nil {
			closeUnreadBody(w, r) // the authorizer takes no body
			g.fail(w, r, err)
			return
		}
		if resp.StatusCode != http.StatusOK {
			defer resp.Body.Close()
			closeUnreadBody(w, r)
			copyHeader(w.Header(), resp.Header)
			w.WriteHeader(resp.StatusCode)
			g.copyBody(w, r, resp, false)
			return
		}
		// Read the (ignored) body to the end so the connection is reused,
		// unless it goes on and on: Close then abandons it.
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxIgnoredBody))
		resp.Body.Close()
		vars := map[string]string{}
		r2 := r.Clone(r.Context())
		// Only the authorizer may set Variable-* headers: a client sending
		// its own would otherwise pass them on as if granted.
		for k := range r2.Header {
			if strings.HasPrefix(k, "Variable-") {
				delete(r2.Header, k)
			}
		}
		for k, vs := range resp.Header {
			name, ok := strings.CutPrefix(k, "Variable-")
			if !ok || name == "" || len(vs) == 0 {
				continue
			}
			r2.Header[k] = vs
			vars[strings.ToUpper(strings.ReplaceAll(name, "-", "_"))] = vs[0]
		}
		if len(vars) > 0 {
			r2 = r2.WithContext(context.WithValue(r2.Context(), authVarsKey{}, vars))
		}
		next.ServeHTTP(w, r2)
	})
}
