package varlinkd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Limits bound what one client can make berthd hold, as systemd's own
// varlink servers do.
type Limits struct {
	// MaxMessage is the largest request in bytes (systemd: 16 MiB).
	MaxMessage int
	// MaxConns and MaxConnsPerUID cap open connections (systemd: 4096
	// and 1024).
	MaxConns, MaxConnsPerUID int
	// IdleTimeout closes a connection that sends nothing for this long
	// while no call of it runs.
	IdleTimeout time.Duration
	// MaxFDs is the most file descriptors one request may carry.
	MaxFDs int
}

// DefaultLimits are berthd's.
var DefaultLimits = Limits{MaxMessage: 16 << 20, MaxConns: 4096, MaxConnsPerUID: 1024, IdleTimeout: 30 * time.Second, MaxFDs: 16}

// ErrMessageTooLarge ends a connection whose request exceeds MaxMessage.
var ErrMessageTooLarge = errors.New("varlink message too large")

// serverConn is one client connection. berthd reads requests itself,
// rather than through varlink/go's loop, so that it can bound their size
// and idle time, keep the caller's credentials from the moment it
// connected, and survive a failing call; varlink/go dispatches each one.
type serverConn struct {
	uc     *net.UnixConn
	caller Caller
	limits Limits

	inCall atomic.Bool // a call of it is being answered

	buf []byte     // read but not yet returned
	fds []*os.File // received with what is in buf
	wmu sync.Mutex
}

func newServerConn(uc *net.UnixConn, limits Limits) *serverConn {
	return &serverConn{uc: uc, caller: peerCaller(uc), limits: limits}
}

// NetConn lets handlers reach the socket (varlink.GetNetConn).
func (c *serverConn) NetConn() net.Conn { return c.uc }

// readMessage returns the next NUL-terminated request without its NUL,
// with the descriptors that came with it. It scans only new bytes, so a
// request costs time linear in its size, and gives up past MaxMessage.
func (c *serverConn) readMessage(timeout time.Duration) ([]byte, []*os.File, error) {
	scanned := 0
	chunk := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*c.limits.MaxFDs))
	for {
		if i := bytes.IndexByte(c.buf[scanned:], 0); i >= 0 {
			end := scanned + i
			msg := append([]byte(nil), c.buf[:end]...)
			c.buf = append(c.buf[:0], c.buf[end+1:]...)
			fds := c.fds
			c.fds = nil
			return msg, fds, nil
		}
		scanned = len(c.buf)
		if len(c.buf) > c.limits.MaxMessage {
			return nil, nil, ErrMessageTooLarge
		}
		if timeout > 0 {
			c.uc.SetReadDeadline(time.Now().Add(timeout))
		}
		n, oobn, _, _, err := c.uc.ReadMsgUnix(chunk, oob)
		if oobn > 0 {
			if err := c.takeFDs(oob[:oobn]); err != nil {
				return nil, nil, err
			}
		}
		if n > 0 {
			c.buf = append(c.buf, chunk[:n]...)
		}
		if err != nil {
			return nil, nil, err
		}
		if n == 0 {
			return nil, nil, io.EOF
		}
	}
}

func (c *serverConn) takeFDs(oob []byte) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if len(c.fds) >= c.limits.MaxFDs {
				unix.Close(fd)
				continue
			}
			unix.CloseOnExec(fd)
			c.fds = append(c.fds, os.NewFile(uintptr(fd), "passed"))
		}
	}
	return nil
}

func (c *serverConn) closeFDs() {
	for _, f := range c.fds {
		f.Close()
	}
	c.fds = nil
}

// Write sends a reply (varlink.ReadWriterContext).
func (c *serverConn) Write(ctx context.Context, b []byte) (int, error) {
	return c.WriteWithFDs(ctx, b, nil)
}

// WriteWithFDs sends a reply with descriptors (varlink.FDReadWriter).
func (c *serverConn) WriteWithFDs(ctx context.Context, b []byte, fds []*os.File) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var oob []byte
	if len(fds) > 0 {
		ints := make([]int, len(fds))
		for i, f := range fds {
			ints[i] = int(f.Fd())
		}
		oob = unix.UnixRights(ints...)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.uc.SetWriteDeadline(dl)
	}
	total := 0
	for total < len(b) {
		n, _, err := c.uc.WriteMsgUnix(b[total:], oob, nil)
		total += n
		oob = nil
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Read, ReadBytes and ReadBytesWithFDs complete varlink's interfaces;
// handlers do not read from their connection.
func (c *serverConn) Read(ctx context.Context, p []byte) (int, error) { return 0, io.EOF }
func (c *serverConn) ReadBytes(ctx context.Context, delim byte) ([]byte, error) {
	return nil, io.EOF
}
func (c *serverConn) ReadBytesWithFDs(ctx context.Context, delim byte) ([]byte, []*os.File, error) {
	return nil, nil, io.EOF
}

// serve answers requests on c until the peer closes, a limit is hit, or
// ctx ends. A call that panics gets an error reply; the connection is
// closed, and berthd and every other call go on.
func (s *Server) serve(ctx context.Context, c *serverConn) {
	defer c.uc.Close()
	defer c.closeFDs()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for {
		msg, fds, err := c.readMessage(s.Limits.IdleTimeout)
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, ErrMessageTooLarge):
				s.Log.Warningf("closing connection of uid %d: request over %d bytes", c.caller.UID, s.Limits.MaxMessage)
			case errors.As(err, &ne) && ne.Timeout():
				s.Log.Debugf("closing connection of uid %d: silent for %s", c.caller.UID, s.Limits.IdleTimeout)
			}
			return
		}
		c.uc.SetReadDeadline(time.Time{})
		c.inCall.Store(true)
		err = s.dispatch(ctx, c, msg, fds)
		c.inCall.Store(false)
		if err != nil || s.stopping.Load() {
			return
		}
	}
}

// dispatch hands one request to varlink/go, turning a panic into an
// error reply.
func (s *Server) dispatch(ctx context.Context, c *serverConn, msg []byte, fds []*os.File) (err error) {
	s.calls.Add(1)
	defer func() { s.last.Store(time.Now().UnixNano()); s.calls.Add(-1) }()
	defer func() {
		if p := recover(); p != nil {
			s.Log.Errorf("call from uid %d failed: panic: %v\n%s", c.caller.UID, p, debug.Stack())
			reply, _ := json.Marshal(map[string]any{"error": ErrInternal, "parameters": map[string]string{"reason": fmt.Sprint(p)}})
			c.Write(ctx, append(reply, 0))
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return s.svc.HandleMessageWithFDs(ctx, c, withParameters(msg), fds)
}

// withParameters gives a call that has no "parameters" an empty object.
// The varlink protocol lets a caller without parameters leave them out,
// and systemd 262's varlinkctl does; varlink/go's bindings answer such a
// call with InvalidParameter.
func withParameters(msg []byte) []byte {
	// Read as varlink/go reads a call (a struct field, so the key
	// matches as encoding/json matches it).
	var probe struct {
		Parameters json.RawMessage `json:"parameters"`
	}
	if json.Unmarshal(msg, &probe) != nil || probe.Parameters != nil {
		return msg // varlink/go answers what is not a call
	}
	var call map[string]json.RawMessage
	if json.Unmarshal(msg, &call) != nil {
		return msg
	}
	call["parameters"] = json.RawMessage("{}")
	out, err := json.Marshal(call)
	if err != nil {
		return msg
	}
	return out
}

// ErrInternal is the error a call that failed inside berthd gets.
const ErrInternal = "io.berth.InternalError"

// connTable counts open connections in total and per uid.
type connTable struct {
	mu    sync.Mutex
	conns map[*serverConn]bool
	byUID map[uint32]int
}

// add admits c unless a limit is reached.
func (t *connTable) add(c *serverConn, l Limits) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		t.conns, t.byUID = map[*serverConn]bool{}, map[uint32]int{}
	}
	if len(t.conns) >= l.MaxConns || t.byUID[c.caller.UID] >= l.MaxConnsPerUID {
		return false
	}
	t.conns[c] = true
	t.byUID[c.caller.UID]++
	return true
}

func (t *connTable) remove(c *serverConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
	if t.byUID[c.caller.UID]--; t.byUID[c.caller.UID] <= 0 {
		delete(t.byUID, c.caller.UID)
	}
}

// closeIdle ends every connection that waits for a request (at exit: a
// silent client keeps none); the others end after their call.
func (t *connTable) closeIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		if !c.inCall.Load() {
			c.uc.CloseRead()
		}
	}
}

// withDefaults fills the zero fields of l from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxMessage == 0 {
		l.MaxMessage = d.MaxMessage
	}
	if l.MaxConns == 0 {
		l.MaxConns = d.MaxConns
	}
	if l.MaxConnsPerUID == 0 {
		l.MaxConnsPerUID = d.MaxConnsPerUID
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.MaxFDs == 0 {
		l.MaxFDs = d.MaxFDs
	}
	return l
}
