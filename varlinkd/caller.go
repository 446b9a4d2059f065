package varlinkd

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"
)

// Caller is who is on the other end of a call, from SO_PEERCRED when it
// connected.
type Caller struct {
	UID, GID uint32
	PID      int32
	// StartTime is the process's start time (field 22 of /proc/PID/stat),
	// read when it connected: with PID it names the process for polkit.
	StartTime uint64
	// PIDFD refers to the process itself where the kernel can say
	// (SO_PEERPIDFD, or pidfd_open right after connecting), else -1.
	PIDFD int
	known bool
}

// soPeerPIDFD is SO_PEERPIDFD (Linux 6.5).
const soPeerPIDFD = 77

// peerCaller reads the credentials of the process that connected uc.
func peerCaller(uc *net.UnixConn) Caller {
	c := Caller{PIDFD: -1}
	raw, err := uc.SyscallConn()
	if err != nil {
		return c
	}
	raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			return
		}
		c.UID, c.GID, c.PID, c.known = cred.Uid, cred.Gid, cred.Pid, true
		if pfd, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, soPeerPIDFD); err == nil {
			c.PIDFD = pfd
		}
	})
	if !c.known || c.PID <= 0 {
		return c
	}
	if c.PIDFD < 0 {
		// Not race-free as SO_PEERPIDFD is, but as early as can be.
		if pfd, err := unix.PidfdOpen(int(c.PID), 0); err == nil {
			c.PIDFD = pfd
		}
	}
	c.StartTime, _ = processStartTime(c.PID)
	return c
}

// Root reports whether the caller is root, by its credentials.
func (c Caller) Root() bool { return c.known && c.UID == 0 }

// release closes what the caller holds.
func (c *Caller) release() {
	if c.PIDFD >= 0 {
		unix.Close(c.PIDFD)
		c.PIDFD = -1
	}
}

// caller is who made call c; a call on a connection that has no
// credentials (not a unix socket) is treated as unprivileged.
func caller(c *varlink.Call) Caller {
	if sc, ok := c.Conn.(*serverConn); ok {
		return sc.caller
	}
	return Caller{PIDFD: -1}
}

// hangup returns a context that ends when ctx does or when the peer of the
// call's connection is gone. Reading would steal the next request, so it
// polls instead, for POLLHUP: a peer that only shut down its writing side
// (POLLRDHUP) still waits for its reply.
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
				fds := []unix.PollFd{{Fd: int32(fd), Events: 0}}
				n, err := unix.Poll(fds, 0)
				gone = err == nil && n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
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
