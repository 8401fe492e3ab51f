package fcgi

import (
	"os"
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

// answer runs f, which writes the serve goroutine's answer to a record it
// read (a management record, a refused BEGIN_REQUEST), on the connection's
// Writer, under wmu. While more whole records wait in the Reader, the answer
// waits in the Writer for the next ones, so that a burst of small records
// costs one write system call, not one each; flushAnswers sends them before
// the serve goroutine next reads from the network.
func (c *conn) answer(f func(w *wire.Writer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.rd.Ready(anyRecord) {
		return c.writeLocked(f)
	}
	c.unflushed.Store(true)
	return c.writeRecords(f, time.Time{}, false)
}

// flushAnswers sends the answers that answer left in the Writer, if no other
// write has sent them since. Called by the serve goroutine.
func (c *conn) flushAnswers() {
	if !c.unflushed.Load() {
		return
	}
	c.wmu.Lock()
	c.flushAnswersLocked()
	c.wmu.Unlock()
}

// flushAnswersLocked is flushAnswers with wmu held.
func (c *conn) flushAnswersLocked() {
	if c.unflushed.Load() {
		c.unflushed.Store(false)
		_ = c.writeLocked(func(*wire.Writer) error { return nil })
	}
}

// writeLocked runs f on the connection's Writer and flushes; wmu is held.
// After a write error the connection is closed and every later write fails.
func (c *conn) writeLocked(f func(w *wire.Writer) error) error {
	return c.writeRecords(f, time.Time{}, true)
}

// writeRecords runs f on the connection's Writer, wmu held, under the write
// deadline, which also bounds the writes the Writer makes when its buffer
// fills, and flushes when flush is set. A non-zero until is a deadline of
// the request's own (http.ResponseController.SetWriteDeadline) on top of
// Server.WriteTimeout. After a write error the connection is closed and
// every later write fails.
func (c *conn) writeRecords(f func(w *wire.Writer) error, until time.Time, flush bool) error {
	if c.werr != nil {
		return c.werr
	}
	if t := c.srv.writeTimeout(); t > 0 || !until.IsZero() || c.exact {
		now := time.Now()
		var d time.Time
		if t > 0 {
			d = now.Add(t)
		}
		switch {
		case !until.IsZero():
			if !until.After(now) {
				return os.ErrDeadlineExceeded
			}
			d = minTime(d, until)
			c.setWriteDeadline(d, true)
		case c.exact || c.writeDeadline.Sub(now) < t/2:
			c.setWriteDeadline(d, false)
		}
	}
	err := f(&c.wr)
	if err == nil && flush {
		err = c.wr.Flush()
	}
	if err != nil {
		if isTimeout(err) {
			c.srv.stats.timeouts.Add(1)
			c.srv.logger().Warn("fcgi: write timeout; closing connection", "remote", c.remoteAddr())
		}
		c.werr = ErrConnClosed
		c.wr.Reset(c.rwc)
		go c.close(ErrConnClosed)
		return c.werr
	}
	return nil
}

func (c *conn) setWriteDeadline(d time.Time, exact bool) {
	c.writeDeadline, c.exact = d, exact
	c.rwc.SetWriteDeadline(d)
}
