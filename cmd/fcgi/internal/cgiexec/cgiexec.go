// Package cgiexec runs a CGI/1.1 script (RFC 3875) for one HTTP request
// and streams its response, with what net/http/cgi lacks for a FastCGI
// wrapper: the script runs in a process group of its own, and the whole
// group (the script and anything it started) is killed when the request's
// context ends, when a deadline passes, and when the script exits, so no
// process outlives its request.
package cgiexec

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/fcgikit/fcgi/cmd/fcgi/internal/pgroup"
	"github.com/fcgikit/fcgi/cmd/fcgi/internal/reap"
	"github.com/fcgikit/fcgi/internal/cgihdr"
)

// MaxHeaderBytes bounds the CGI header block a script may write.
const MaxHeaderBytes = cgihdr.DefaultLimit

// A Cmd is one run of a CGI script.
type Cmd struct {
	Path string   // the script
	Args []string // argv[1:]; CGI scripts usually get none
	Dir  string   // working directory; "" means the script's directory
	Env  []string // the CGI environment, "NAME=value" strings

	// Stdin is the request body. Serve closes it when it returns, which
	// also ends a copy blocked reading it.
	Stdin io.ReadCloser

	// Stderr receives the script's standard error, line by line (a
	// line over 64 KiB in pieces of 64 KiB). Nil discards it.
	Stderr func(line string)

	// HeaderSent, if not nil, is called once the response header has
	// been flushed to the client. From then on stderr sent to the web
	// server can no longer cost the response: nginx fails one whose
	// header comes after a buffer full of STDERR records.
	HeaderSent func()
}

// Errors Serve returns.
var (
	// ErrBadHeader: the script's output did not start with a valid CGI
	// header block. The client got 502 Bad Gateway.
	ErrBadHeader = errors.New("cgiexec: malformed CGI response header")
)

// Serve starts the script, passes it the request body, and writes its
// response to w, but not before the script has read all of the body,
// closed its stdin or exited (nginx sends no more of the body once it has
// the response header). When ctx ends first, the script's process group is
// killed; if no header was sent yet the client gets 504 Gateway Timeout
// for a deadline, nothing otherwise (the client has gone). When reading
// the body fails (it is cut short, or too large), the group is killed
// before the script's stdin closes, so that it never takes part of its
// body for the whole, and the client gets 400 (413 for a body over
// http.MaxBytesReader's limit) if no header was sent yet. Serve returns
// only once every process of the group is gone and every pipe is
// drained, with the script's exit error, ErrBadHeader, the body's error or
// ctx's error.
func (c *Cmd) Serve(ctx context.Context, w http.ResponseWriter) (err error) {
	var closers []io.Closer
	defer func() {
		for _, f := range closers {
			f.Close()
		}
	}()
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			closers = append(closers, r, w)
		}
		return r, w, err
	}
	inR, inW, err := pipe()
	if err != nil {
		return err
	}
	outR, outW, err := pipe()
	if err != nil {
		return err
	}
	errR, errW, err := pipe()
	if err != nil {
		return err
	}

	cmd := exec.Command(c.Path, c.Args...)
	cmd.Env = c.Env
	cmd.Dir = c.Dir
	if cmd.Dir == "" {
		cmd.Dir = dirOf(c.Path)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// A group of its own, so that killing -pgid reaches everything
		// the script starts, once it is gone too (unless that calls
		// setsid, as daemons do: pgroup kills those while the script
		// runs).
		Setpgid: true,
	}
	// If this process dies, the kernel kills the script.
	pgroup.DieWithParent(cmd.SysProcAttr, syscall.SIGKILL)
	if err := reap.Start(cmd); err != nil {
		http.Error(w, "cannot start script", http.StatusInternalServerError)
		return err
	}
	// The children hold their ends now; ours must go, or EOF never comes.
	inR.Close()
	outW.Close()
	errW.Close()

	g := pgroup.New(cmd.Process.Pid)
	waitc := make(chan error, 1)
	exited := make(chan struct{})
	// Owned by Serve: reaps the script, then kills what it left behind,
	// which closes the pipes. Ends when the script exits.
	go func() {
		err := cmd.Wait()
		reap.Done(cmd)
		g.Kill(true)
		close(exited)
		waitc <- err
	}()
	stopKill := context.AfterFunc(ctx, func() { g.Kill(false) })
	defer stopKill()

	var wg sync.WaitGroup
	fed := make(chan struct{})
	bodyFailed := make(chan struct{})
	var bodyErr error // set before bodyFailed or fed is closed
	// Set once Serve closes the body itself, which fails a read in
	// progress: that is no fault of the body's.
	var closingStdin atomic.Bool
	// Owned by Serve: copies the body to the script. Ends at the body's
	// end, or when the script stops reading (EPIPE), or when Serve closes
	// the body.
	wg.Go(func() {
		defer close(fed)
		if c.Stdin != nil {
			body := &bodyReader{r: c.Stdin}
			io.Copy(inW, body)
			if body.err != nil && !closingStdin.Load() {
				bodyErr = body.err
				close(bodyFailed)
				// Killed before its stdin closes, the script never
				// takes the part it got for the whole body.
				g.Kill(false)
			}
		}
		inW.Close()
	})
	// Owned by Serve: forwards stderr lines. Ends when every process of
	// the group has gone.
	wg.Go(func() {
		// A line longer than the buffer comes in pieces of its size,
		// rather than end the stream (bufio.Scanner's ErrTooLong).
		br := bufio.NewReaderSize(errR, 64<<10)
		for {
			line, err := br.ReadSlice('\n')
			if len(line) > 0 && c.Stderr != nil {
				if err == nil {
					line = bytes.TrimSuffix(line[:len(line)-1], []byte("\r"))
				}
				c.Stderr(string(line))
			}
			if err != nil && err != bufio.ErrBufferFull {
				break
			}
		}
	})

	// The response waits for the body: nginx sends no more of the body
	// once it has the response header, so a script that writes before it
	// has read all of its body would wait for the rest for ever. A script
	// that exits, or closes its stdin, has had all it wants.
	hold := func() error {
		select {
		case <-fed:
			return bodyErr
		case <-exited:
			select {
			case <-bodyFailed:
				// Its death is the feeder's doing, not an end.
				return bodyErr
			default:
			}
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		return nil
	}
	status, herr := writeResponse(w, outR, hold, c.HeaderSent)
	if herr != nil {
		// A bad header, or the client went away: nobody wants the rest.
		g.Kill(false)
	}
	// Drain stdout so the group is never blocked writing to it, then
	// wait for the group's end.
	io.Copy(io.Discard, outR)
	werr := <-waitc
	if c.Stdin != nil {
		closingStdin.Store(true)
		c.Stdin.Close()
	}
	wg.Wait()

	switch {
	case ctx.Err() != nil:
		if status == 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			http.Error(w, "script timed out", http.StatusGatewayTimeout)
		}
		return fmt.Errorf("%w (script killed)", context.Cause(ctx))
	case bodyErr != nil:
		// The script was killed for it: whatever else went wrong
		// followed.
		if status == 0 {
			code := http.StatusBadRequest
			if mbe := (*http.MaxBytesError)(nil); errors.As(bodyErr, &mbe) {
				code = http.StatusRequestEntityTooLarge
			}
			http.Error(w, http.StatusText(code), code)
		}
		return fmt.Errorf("request body: %w (script killed)", bodyErr)
	case herr != nil:
		if status == 0 {
			http.Error(w, "bad gateway: malformed CGI response", http.StatusBadGateway)
		}
		if werr != nil {
			return fmt.Errorf("%w (script: %v)", herr, werr)
		}
		return herr
	}
	return werr
}

// bodyReader keeps the error that ended a read of the request body, other
// than its end.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		return path[:i]
	}
	return "/"
}

// writeResponse parses the CGI header block from r (RFC 3875 §6), with the
// parser fcgi.Client uses, and writes the response to w once hold returns
// nil, calling sent (if not nil) once the header has been flushed. It
// returns the status sent (0 if none was).
func writeResponse(w http.ResponseWriter, r io.Reader, hold func() error, sent func()) (status int, err error) {
	var sc cgihdr.Scanner
	var hdr http.Header
	var body io.Reader
	buffered := false // the body's first bytes came with the header
	hbuf := make([]byte, 4<<10)
	for body == nil {
		n, rerr := r.Read(hbuf)
		if n > 0 {
			block, rest, done, err := sc.Feed(hbuf[:n], MaxHeaderBytes)
			if err != nil {
				return 0, fmt.Errorf("%w: %v", ErrBadHeader, err)
			}
			if done {
				if status, hdr, err = cgihdr.Parse(block, nil); err != nil {
					return 0, fmt.Errorf("%w: %v", ErrBadHeader, err)
				}
				// rest may alias hbuf: the body is copied with a
				// buffer of its own.
				body = io.MultiReader(bytes.NewReader(rest), r)
				buffered = len(rest) > 0
				continue
			}
		}
		if rerr == io.EOF {
			return 0, fmt.Errorf("%w: output ended before the blank line after the headers", ErrBadHeader)
		}
		if rerr != nil {
			return 0, fmt.Errorf("%w: %v", ErrBadHeader, rerr)
		}
	}
	if err := hold(); err != nil {
		return 0, err
	}
	h := w.Header()
	for k, vs := range hdr {
		h[k] = vs
	}
	w.WriteHeader(status)

	rc := http.NewResponseController(w)
	flush := func() error {
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		if sent != nil {
			sent()
			sent = nil
		}
		return nil
	}
	// The header goes out at once, not with the body's first bytes: a
	// script may take its time over its body (a long poll, a slow
	// report), and the web server gives up on a response without a
	// header (nginx's fastcgi_read_timeout). With bytes of the body at
	// hand, the first write below sends both.
	if !buffered {
		if err := flush(); err != nil {
			return status, err
		}
	}
	buf := make([]byte, 32<<10)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return status, err
			}
			// Stream: the script decides the pacing, as with nginx's
			// fastcgi_buffering off.
			if err := flush(); err != nil {
				return status, err
			}
		}
		if rerr == io.EOF {
			return status, nil
		}
		if rerr != nil {
			return status, rerr
		}
	}
}
