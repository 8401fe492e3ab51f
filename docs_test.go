package fcgi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

// The code in README.md, docs/*.md and the package overview (doc.go) is
// compiled, vetted and run here, so that no snippet can drift from the code.
//
// The rules, kept as simple as they can be:
//
//   - Every ```go block of README.md and docs/*.md is a snippet, and so is
//     every code block (tab-indented) of doc.go's package comment.
//   - A snippet whose first line starts with "package" is a whole file. Any
//     other snippet is a sequence of statements: it becomes the body of
//     func main in a package main that imports the packages it names, looked
//     up by name in snippetImports (so "fcgi.Server" imports the module,
//     "http.Handler" net/http). A fragment must declare what it uses.
//   - All snippets are built by one `go build` and checked by one `go vet`
//     of a temporary module that has one package per snippet and requires
//     this checkout through a replace directive, offline (GOPROXY=off, the
//     module cache and the checkout's go.sum). A //line directive makes
//     errors point at the Markdown or doc.go line.
//   - Then each Markdown snippet runs, in parallel. An HTML comment on the
//     line before its fence names how: `<!-- snippet: NAME -->` runs it with
//     snippetRunners[NAME] (a server snippet, which needs an address and a
//     peer); `<!-- snippet: build-only: REASON -->` only builds it (say
//     why: it needs something the test cannot start). An unmarked snippet is
//     run with no arguments and must exit 0 within snippetRunTimeout.
//     doc.go's blocks are build-only: they are parts of programs.
//
// The fcgi command lines of the other blocks (sh, dockerfile, yaml) are
// checked by TestDocCommands, README.md's nginx block is run by real nginx
// in front of the nginx-app snippet (runReadmeNginxBlock), and the
// caddyfile blocks of README.md by the caddy module's TestReadmeCaddyfiles,
// which adapts each with Caddy.

// snippetImports maps a package name used in a fragment to its import path.
var snippetImports = map[string]string{
	"fcgi":    "github.com/fcgikit/fcgi",
	"http":    "net/http",
	"context": "context",
	"signal":  "os/signal",
	"syscall": "syscall",
	"fmt":     "fmt",
	"io":      "io",
	"log":     "log",
	"slog":    "log/slog",
	"os":      "os",
	"time":    "time",
	"net":     "net",
	"flag":    "flag",
	"errors":  "errors",
	"strings": "strings",
}

const snippetRunTimeout = 30 * time.Second

// snippetRunners run the snippets marked `<!-- snippet: NAME -->`; bin is
// the built program.
var snippetRunners = map[string]func(t *testing.T, bin string){
	"nginx-app": runNginxAppSnippet,
	"gateway":   runGatewaySnippet,
}

// A snippet is one code block of the documentation.
type snippet struct {
	file string // relative to the checkout: README.md, docs/command.md
	line int    // of the block's first line of code
	lang string // the fence's info string: go, sh...
	mark string // from <!-- snippet: MARK -->, or ""
	code string
}

func (s snippet) String() string { return fmt.Sprintf("%s:%d", s.file, s.line) }

var snippetMark = regexp.MustCompile(`^<!--\s*snippet:\s*(.*?)\s*-->$`)

// markdownBlocks returns the fenced code blocks of a Markdown file.
func markdownBlocks(t *testing.T, file string) []snippet {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []snippet
	var cur *snippet
	prev := ""
	for i, line := range strings.Split(string(src), "\n") {
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &snippet{file: filepath.ToSlash(file), line: i + 2, lang: strings.Fields(line[3:] + " x")[0]}
			if m := snippetMark.FindStringSubmatch(strings.TrimSpace(prev)); m != nil {
				cur.mark = m[1]
			}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.code += line + "\n"
		}
		if strings.TrimSpace(line) != "" {
			prev = line
		}
	}
	if cur != nil {
		t.Fatalf("%s: unterminated code block", cur)
	}
	return blocks
}

// docCommentBlocks returns the code blocks (lines "//\t...", blank "//"
// lines inside them included) of the comment of a Go file.
func docCommentBlocks(t *testing.T, file string) []snippet {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(src), "\n")
	var blocks []snippet
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "//\t") {
			continue
		}
		b := snippet{file: file, line: i + 1, lang: "go", mark: "build-only: part of a program"}
		for ; i < len(lines); i++ {
			l := lines[i]
			if l == "//" && i+1 < len(lines) && strings.HasPrefix(lines[i+1], "//\t") {
				b.code += "\n"
				continue
			}
			code, ok := strings.CutPrefix(l, "//\t")
			if !ok {
				break
			}
			b.code += code + "\n"
		}
		blocks = append(blocks, b)
	}
	return blocks
}

// docSnippets returns every code block of README.md, docs/*.md and doc.go.
func docSnippets(t *testing.T) []snippet {
	t.Helper()
	files, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	var all []snippet
	for _, f := range append([]string{"README.md"}, files...) {
		all = append(all, markdownBlocks(t, f)...)
	}
	return append(all, docCommentBlocks(t, "doc.go")...)
}

// snippetSource returns the Go file a snippet builds as.
func snippetSource(s snippet) (string, error) {
	directive := fmt.Sprintf("//line %s:%d\n", s.file, s.line)
	if strings.HasPrefix(s.code, "package ") {
		return directive + s.code, nil
	}
	body := "package main\n\nfunc main() {\n" + directive + s.code + "}\n"
	// The names the parser leaves unresolved are the packages the fragment
	// uses (and the predeclared identifiers).
	f, err := parser.ParseFile(token.NewFileSet(), s.String(), body, 0)
	if err != nil {
		return "", err
	}
	paths := map[string]bool{}
	for _, id := range f.Unresolved {
		if p, ok := snippetImports[id.Name]; ok {
			paths[p] = true
		}
	}
	var imports []string
	for p := range paths {
		imports = append(imports, fmt.Sprintf("\t%q\n", p))
	}
	sort.Strings(imports)
	return "package main\n\nimport (\n" + strings.Join(imports, "") + ")\n\nfunc main() {\n" + directive + s.code + "}\n", nil
}

// buildSnippets builds every Go snippet in dir. It returns each snippet's
// program, by snippet.String().
func buildSnippets(t *testing.T, dir string) (map[string]string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("go tool not found: %v", err)
	}
	checkout, err := filepath.Abs(".")
	if err != nil {
		return nil, err
	}
	gomod := fmt.Sprintf("module snippets\n\ngo 1.26\n\nrequire github.com/fcgikit/fcgi v0.0.0\n\nreplace github.com/fcgikit/fcgi => %s\n", checkout)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		return nil, err
	}
	sum, err := os.ReadFile("go.sum")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
		return nil, err
	}
	bins := map[string]string{}
	for i, s := range docSnippets(t) {
		if s.lang != "go" {
			continue
		}
		src, err := snippetSource(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", s, err)
		}
		pkg := fmt.Sprintf("s%02d", i)
		if err := os.Mkdir(filepath.Join(dir, pkg), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, pkg, "main.go"), []byte(src), 0o644); err != nil {
			return nil, err
		}
		bins[s.String()] = filepath.Join(dir, "bin", pkg)
	}
	env := append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
	for _, args := range [][]string{
		{"build", "-o", filepath.Join(dir, "bin") + string(filepath.Separator), "./..."},
		{"vet", "./..."},
	} {
		cmd := exec.Command(goTool, args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return bins, nil
}

// TestDocSnippets builds every Go snippet of the documentation and runs
// those that can run here (see the rules above).
func TestDocSnippets(t *testing.T) {
	bins, err := buildSnippets(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range docSnippets(t) {
		if s.lang != "go" {
			continue
		}
		name := s.String()
		if s.mark != "" {
			name += "/" + strings.TrimSuffix(strings.Fields(s.mark)[0], ":")
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bin := bins[s.String()]
			switch mark := s.mark; {
			case strings.HasPrefix(mark, "build-only"):
				reason := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(mark, "build-only"), ":"))
				if reason == "" {
					t.Fatalf("%s: a build-only snippet says why: <!-- snippet: build-only: REASON -->", s)
				}
				t.Skipf("built only: %s", reason)
			case mark == "":
				runSnippetToExit(t, bin)
			default:
				run, ok := snippetRunners[mark]
				if !ok {
					t.Fatalf("%s: no runner %q in snippetRunners", s, mark)
				}
				run(t, bin)
			}
		})
	}
}

// runSnippetToExit runs a program with no arguments; it must exit 0.
func runSnippetToExit(t *testing.T, bin string) {
	ctx, cancel := context.WithTimeout(context.Background(), snippetRunTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// A runningSnippet is a server snippet started by startSnippet.
type runningSnippet struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited; err is then set
	err  error
	out  logBuffer
}

// startSnippet starts a server snippet; it is killed when the test ends.
func startSnippet(t *testing.T, bin string, args ...string) *runningSnippet {
	t.Helper()
	p := &runningSnippet{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitDial waits until something listens on network, address, or the
// program exits.
func waitDial(t *testing.T, network, address string, p *runningSnippet) {
	t.Helper()
	waitForMsg(t, "a listener on "+address, func() bool {
		select {
		case <-p.done:
			t.Fatalf("the program exited before listening on %s: %v\n%s", address, p.err, p.out.String())
		default:
		}
		c, err := net.Dial(network, address)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// runNginxAppSnippet runs README's "Serving a Go program behind nginx" as
// nginx would see it, and proves its graceful shutdown: SIGTERM with
// requests in flight (their handlers are reading bodies that are still
// arriving), after which every one of them completes with 200 and its whole
// answer, and the program exits 0. A main that returned with ListenAndServe
// would exit under them.
func runNginxAppSnippet(t *testing.T, bin string) {
	sock := filepath.Join(peer.TempDir(t), "app.sock")
	p := startSnippet(t, bin, "-listen", "unix:"+sock)
	waitDial(t, "unix", sock, p)
	out := &p.out
	c := &fcgi.Client{Addr: "unix:" + sock, ErrorLog: quietLog}
	defer c.Close()
	do := func(method, uri string, body io.Reader, n int) (int, string, error) {
		params := map[string]string{
			"REQUEST_METHOD": method, "REQUEST_URI": uri, "SCRIPT_NAME": uri,
			"SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "example.com",
		}
		if body != nil {
			params["CONTENT_LENGTH"] = fmt.Sprint(n)
		}
		resp, err := c.Do(context.Background(), &fcgi.Request{Params: params, Body: body})
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	if status, body, err := do("GET", "/", nil, 0); err != nil || status != 200 || body != "hello from FastCGI: GET /, 0 bytes\n" {
		t.Fatalf("GET / = %d %q, %v\n%s", status, body, err, out)
	}
	t.Run("nginx", func(t *testing.T) { runReadmeNginxBlock(t, sock) })

	const inFlight, half = 8, 1000
	type result struct {
		i      int
		status int
		body   string
		err    error
	}
	results := make(chan result, inFlight)
	writers := make([]*io.PipeWriter, inFlight)
	for i := range inFlight {
		pr, pw := io.Pipe()
		writers[i] = pw
		go func() {
			status, body, err := do("POST", fmt.Sprintf("/upload/%d", i), pr, 2*half)
			pr.CloseWithError(errors.New("request over"))
			results <- result{i, status, body, err}
		}()
	}
	for _, w := range writers {
		// Returns once the Client has taken it: BEGIN_REQUEST and PARAMS
		// have gone before it, so the handler starts reading.
		if _, err := w.Write(bytes.Repeat([]byte("a"), half)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // the handlers read their first halves
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// ListenAndServe has returned by now: a main that stopped with it
	// would have exited.
	time.Sleep(300 * time.Millisecond)
	for _, w := range writers {
		w.Write(bytes.Repeat([]byte("b"), half))
		w.Close()
	}
	for range inFlight {
		r := <-results
		want := fmt.Sprintf("hello from FastCGI: POST /upload/%d, %d bytes\n", r.i, 2*half)
		if r.err != nil || r.status != 200 || r.body != want {
			t.Errorf("request %d in flight at SIGTERM: %d %q, %v; want 200 %q", r.i, r.status, r.body, r.err, want)
		}
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", p.err, out)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("still running 10 s after SIGTERM with nothing in flight\n%s", out)
	}
}

// runReadmeNginxBlock runs README.md's nginx configuration, as written but
// for the socket's path and the port, with nginx's workers as www-data as
// Debian runs them, in front of the nginx-app snippet listening on sock.
func runReadmeNginxBlock(t *testing.T, sock string) {
	peer.Require(t, "nginx", "nginx")
	peer.RequireRoot(t, "run nginx's workers as www-data", "www-data")
	var block string
	for _, b := range markdownBlocks(t, "README.md") {
		if b.lang == "nginx" {
			block = b.code
			break
		}
	}
	port := peer.FreePort(t)
	for _, r := range [][2]string{
		{"unix:/run/app/fcgi.sock", "unix:" + sock},
		{"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port)},
	} {
		if !strings.Contains(block, r[0]) {
			t.Fatalf("README.md's nginx block has no %q to point at the test's program:\n%s", r[0], block)
		}
		block = strings.Replace(block, r[0], r[1], 1)
	}
	// include fastcgi_params is relative to nginx's configuration
	// directory, where peer.StartNginx writes Debian's file.
	n := peer.StartNginx(t, peer.NginxConfig{User: "www-data", HTTP: block})
	hc := httpClient(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := range 3 {
		status, body := httpGet(t, hc, fmt.Sprintf("%s/page/%d", base, i))
		if want := fmt.Sprintf("hello from FastCGI: GET /page/%d, 0 bytes\n", i); status != 200 || body != want {
			t.Fatalf("GET /page/%d through README's nginx block: %d %q, want 200 %q\nnginx error log:\n%s", i, status, body, want, n.ErrorLog())
		}
	}
	const size = 300 << 10
	resp, err := hc.Post(base+"/upload", "application/octet-stream", bytes.NewReader(make([]byte, size)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("hello from FastCGI: POST /upload, %d bytes\n", size); resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("POST of %d bytes through README's nginx block: %d %q, want 200 %q\nnginx error log:\n%s", size, resp.StatusCode, body, want, n.ErrorLog())
	}
}

// runGatewaySnippet runs README's Gateway program in front of a FastCGI
// application standing in for PHP-FPM: a static file is served directly, any
// other path goes to the front controller.
func runGatewaySnippet(t *testing.T, bin string) {
	dir := peer.TempDir(t)
	root := filepath.Join(dir, "public")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"index.php": "<?php echo 'hi';", "style.css": "body {}\n"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := fcgi.Listen("unix:" + filepath.Join(dir, "php.sock"))
	if err != nil {
		t.Fatal(err)
	}
	php := &fcgi.Server{ErrorLog: quietLog, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "php ran %s for %s", fcgi.ProcessEnv(r)["SCRIPT_FILENAME"], r.URL.Path)
	})}
	go php.Serve(l)
	defer php.Close()

	addr := fmt.Sprintf("127.0.0.1:%d", peer.FreePort(t))
	p := startSnippet(t, bin, "-listen", addr, "-php", "unix:"+filepath.Join(dir, "php.sock"), "-root", root)
	waitDial(t, "tcp", addr, p)
	out := &p.out
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	for path, want := range map[string]string{
		"/style.css": "body {}\n",
		"/users/7":   "php ran " + filepath.Join(root, "index.php") + " for /users/7",
	} {
		resp, err := hc.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, out)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(body) != want {
			t.Errorf("GET %s = %d %q, %v; want 200 %q\n%s", path, resp.StatusCode, body, err, want, out)
		}
	}
}

// TestDocCommands checks every fcgi command line in the code blocks of
// README.md and docs/*.md (sh blocks, and the exec forms ["fcgi", ...] of
// Dockerfile and Kubernetes blocks): its subcommand exists and each flag it
// passes is listed by `fcgi SUBCOMMAND --help`. Lines starting with "#" are
// output, a leading "$ " is a prompt, "go run ./cmd/fcgi" counts as fcgi.
func TestDocCommands(t *testing.T) {
	fcgiCmd := filepath.Join(t.TempDir(), "fcgi")
	if out, err := exec.Command("go", "build", "-o", fcgiCmd, "./cmd/fcgi").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/fcgi: %v\n%s", err, out)
	}
	help := map[string]string{}
	helpOf := func(sub string) string {
		if h, ok := help[sub]; ok {
			return h
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, fcgiCmd, sub, "--help").CombinedOutput()
		help[sub] = string(out)
		if !strings.Contains(help[sub], "Usage: fcgi "+sub) {
			help[sub] = ""
		}
		return help[sub]
	}
	n := 0
	for _, s := range docSnippets(t) {
		for _, args := range fcgiCommandLines(s) {
			n++
			if len(args) == 0 {
				t.Errorf("%s: fcgi with no subcommand", s)
				continue
			}
			h := helpOf(args[0])
			if h == "" {
				t.Errorf("%s: fcgi %s: no such subcommand", s, args[0])
				continue
			}
			for _, a := range args[1:] {
				if a == "--" {
					break
				}
				if !strings.HasPrefix(a, "-") || a == "-" {
					continue
				}
				name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(name) + `\b`).MatchString(h) {
					t.Errorf("%s: fcgi %s: flag %s is not in `fcgi %s --help`", s, args[0], a, args[0])
				}
			}
		}
	}
	t.Logf("%d fcgi command lines checked", n)
	if n < 20 {
		t.Errorf("found only %d fcgi command lines in the documentation: is the extraction broken?", n)
	}
}

var execForm = regexp.MustCompile(`\["fcgi"(?:,\s*"[^"]*")*\]`)

// fcgiCommandLines returns the arguments after "fcgi" of each fcgi command
// in a block.
func fcgiCommandLines(s snippet) [][]string {
	var cmds [][]string
	switch s.lang {
	case "dockerfile", "yaml":
		for _, m := range execForm.FindAllString(s.code, -1) {
			words := shellWords(strings.NewReplacer("[", "", "]", "", ",", " ").Replace(m))
			cmds = append(cmds, words[1:])
		}
	case "sh":
		code := strings.ReplaceAll(s.code, "\\\n", " ")
		for _, line := range strings.Split(code, "\n") {
			line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "$ "))
			if strings.HasPrefix(line, "#") {
				continue
			}
			var cmd []string
		words:
			for _, w := range append(shellWords(line), "|") {
				switch w {
				case "|", ";", "&&", "||", ">", "<", "#":
					if len(cmd) > 0 && cmd[0] == "fcgi" {
						cmds = append(cmds, cmd[1:])
					} else if len(cmd) > 3 && cmd[0] == "go" && cmd[1] == "run" && cmd[2] == "./cmd/fcgi" {
						cmds = append(cmds, cmd[3:])
					}
					cmd = nil
					if w == "#" {
						break words // a comment
					}
				default:
					cmd = append(cmd, w)
				}
			}
		}
	}
	return cmds
}

// shellWords splits a line into words as the shell would, for the simple
// quoting of the documentation: '...' and "..." without escapes.
func shellWords(line string) []string {
	var words []string
	var w strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			w.WriteByte(c)
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == ' ' || c == '\t':
			if in {
				words = append(words, w.String())
				w.Reset()
				in = false
			}
		default:
			w.WriteByte(c)
			in = true
		}
	}
	if in {
		words = append(words, w.String())
	}
	return words
}

// TestReadmeLayout keeps README.md's Layout table true: every file and
// directory it names exists, and every library source file and internal
// package is named, so that a reader looking for a piece of logic finds its
// file there.
func TestReadmeLayout(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Layout\n")
	if !ok {
		t.Fatal("README.md has no Layout section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	named := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		where, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(where, -1) {
			p := strings.TrimSuffix(m[1], "/")
			named[p] = true
			if _, err := os.Stat(p); err != nil {
				t.Errorf("Layout names %s, which does not exist", m[1])
			}
		}
	}
	var want []string
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			want = append(want, f)
		}
	}
	dirs, _ := filepath.Glob("internal/*")
	want = append(want, dirs...)
	want = append(want, "cmd/fcgi", "caddy", "benchmarks")
	for _, w := range want {
		if !named[w] {
			t.Errorf("README.md's Layout does not name %s", w)
		}
	}
}

// TestDocsNameRealTests fails when README.md, docs/ or BENCHMARKS.md cite a
// test, fuzz target or benchmark that no _test.go file of the repository
// (any module) defines: the documents prove their claims by naming tests, so
// a renamed or deleted test must not leave a claim without proof. A name
// ending in * stands for the tests it begins.
func TestDocsNameRealTests(t *testing.T) {
	defined := map[string]bool{}
	funcRE := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)[A-Z0-9_]\w*)\(`)
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != "." {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range funcRE.FindAllSubmatch(b, -1) {
			defined[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	docs, _ := filepath.Glob("docs/*.md")
	docs = append(docs, "README.md", "BENCHMARKS.md")
	citeRE := regexp.MustCompile(`\b((?:Test|Fuzz|Benchmark)[A-Z][A-Za-z0-9_]*)(\*?)`)
	cited := 0
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range citeRE.FindAllStringSubmatch(string(b), -1) {
			name, prefix := m[1], m[2] == "*"
			cited++
			if defined[name] {
				continue
			}
			found := false
			if prefix {
				for d := range defined {
					if strings.HasPrefix(d, name) {
						found = true
						break
					}
				}
			}
			if !found {
				t.Errorf("%s cites %s, which no _test.go file defines", doc, m[1]+m[2])
			}
		}
	}
	if cited < 20 {
		t.Fatalf("only %d citations of tests found: the pattern no longer matches the documents", cited)
	}
}
