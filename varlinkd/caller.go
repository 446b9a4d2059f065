package varlinkd

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"
)

// Caller is who is on the other end of a call, from SO_PEERCRED.
type Caller struct {
	UID, GID uint32
	PID      int32
	known    bool
}

// caller reads the peer credentials of the call's connection. A call on a
// connection that has none (not a unix socket) is treated as unprivileged.
func caller(c *varlink.Call) Caller {
	gc, ok := c.Conn.(varlink.GetNetConn)
	if !ok {
		return Caller{}
	}
	uc, ok := gc.NetConn().(*net.UnixConn)
	if !ok {
		return Caller{}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Caller{}
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return Caller{}
	}
	return Caller{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, known: true}
}

// hangup returns a context that ends when ctx does or when the peer of the
// call's connection hangs up. Reading would steal the next request, so it
// polls for POLLRDHUP instead.
func hangup(ctx context.Context, c *varlink.Call) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	gc, ok := c.Conn.(varlink.GetNetConn)
	if !ok {
		return ctx, cancel
	}
	uc, ok := gc.NetConn().(*net.UnixConn)
	if !ok {
		return ctx, cancel
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx, cancel
	}
	go func() {
		for ctx.Err() == nil {
			var gone bool
			raw.Control(func(fd uintptr) {
				fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
				n, err := unix.Poll(fds, 0)
				gone = err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
			})
			if gone {
				cancel()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return ctx, cancel
}

var errCanceled = errors.New("caller disconnected")
