// Package varlinkd is berthd: the varlink service that does berth's slow,
// privileged work. It serves the generated io.berth.* interfaces on one
// socket, checks who is calling, and exits when idle.
package varlinkd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/machine"
	"github.com/berth-project/berth/internal/syslog"
	"github.com/berth-project/berth/internal/template"
	"github.com/berth-project/berth/varlinkd/ioberthmachine"
	"github.com/berth-project/berth/varlinkd/ioberthpool"
	"github.com/berth-project/berth/varlinkd/ioberthtemplate"
)

// Version is berth's version, reported by org.varlink.service.GetInfo.
var Version = "0.1.0"

// Server is one berthd.
type Server struct {
	Templates *template.Manager
	Machines  *machine.Manager
	// Config finds templates/NAME.toml recipes.
	Config *conf.Loader
	Auth   Authorizer
	Log    *syslog.Logger
	// Notify reports status to the service manager (sd_notify); may be nil.
	Notify func(state string)
	// Limits bound each client; zero fields take DefaultLimits'.
	Limits Limits

	svc   *varlink.Service
	conns connTable
	calls atomic.Int64 // calls being answered
	last  atomic.Int64 // when the last call ended, in Unix nanoseconds
	ops   atomic.Int64 // running operations, background ones included
	wg    sync.WaitGroup
	base  context.Context // outlives connections: background operations
	// stopAccept closes the listener; the socket itself stays with systemd,
	// which hands calls that arrive meanwhile to the next berthd.
	stopAccept func()
	stopping   atomic.Bool
}

// New registers the interfaces.
func New(s *Server) (*Server, error) {
	svc, err := varlink.NewService("berth", "berthd", Version, "https://github.com/berth-project/berth")
	if err != nil {
		return nil, err
	}
	if err := svc.RegisterInterface(ioberthtemplate.VarlinkNew(&templateIface{s})); err != nil {
		return nil, err
	}
	if err := svc.RegisterInterface(ioberthpool.VarlinkNew(&poolIface{s})); err != nil {
		return nil, err
	}
	if err := svc.RegisterInterface(ioberthmachine.VarlinkNew(&machineIface{s})); err != nil {
		return nil, err
	}
	s.svc = svc
	s.Limits = s.Limits.withDefaults()
	if s.Notify == nil {
		s.Notify = func(string) {}
	}
	return s, nil
}

// Serve accepts connections on l until ctx ends or, with idle > 0, until
// nothing has happened for that long and no operation runs. Idle exit is
// a clean exit: the socket unit starts berthd again on the next call.
func (s *Server) Serve(ctx context.Context, l net.Listener, idle time.Duration) error {
	s.base = ctx
	var once sync.Once
	s.stopAccept = func() { once.Do(func() { s.stopping.Store(true); l.Close() }) }
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			s.stopAccept()
		case <-stopped:
		}
	}()
	ul, _ := l.(*net.UnixListener)
	for {
		if idle > 0 && ul != nil {
			ul.SetDeadline(time.Now().Add(idle))
		}
		conn, err := l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Open connections that wait for a request do not keep
				// berthd: only calls and operations do.
				quiet := time.Since(time.Unix(0, s.last.Load())) >= idle
				if quiet && s.calls.Load() == 0 && s.ops.Load() == 0 {
					s.Log.Debugf("idle for %s, exiting", idle)
					s.stopping.Store(true)
					s.conns.closeIdle()
					s.wg.Wait()
					return nil
				}
				continue
			}
			if ctx.Err() != nil || s.stopping.Load() {
				s.conns.closeIdle()
				s.wg.Wait()
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		s.start(ctx, conn)
	}
}

// start serves conn in its own goroutine, or closes it at once when it
// would pass a connection limit. The channel closes when conn is done.
func (s *Server) start(ctx context.Context, conn net.Conn) <-chan struct{} {
	done := make(chan struct{})
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		conn.Close()
		close(done)
		return done
	}
	c := newServerConn(uc, s.Limits)
	if !s.conns.add(c, s.Limits) {
		s.Log.Warningf("refusing connection of uid %d (pid %d): too many connections", c.caller.UID, c.caller.PID)
		c.caller.release()
		uc.Close()
		close(done)
		return done
	}
	s.wg.Add(1)
	go func() {
		defer close(done)
		defer s.wg.Done()
		defer s.conns.remove(c)
		defer c.caller.release()
		s.serve(ctx, c)
	}()
	return done
}

// ServeConn serves one already connected socket (tests use a socketpair)
// and returns when it is closed.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) {
	if s.base == nil {
		s.base = ctx
	}
	<-s.start(ctx, conn)
}

// exitSoon stops accepting calls at once and lets Serve return when the
// open connections are done, so that the socket starts a fresh berthd (and
// mount namespace) for the next call.
func (s *Server) exitSoon() {
	if s.stopAccept != nil {
		s.stopAccept()
	}
}

// operation marks a long operation as running for idle tracking and status.
func (s *Server) operation(status string) func() {
	s.ops.Add(1)
	s.Notify("STATUS=" + status)
	return func() {
		if s.ops.Add(-1) == 0 {
			s.Notify("STATUS=Idle.")
		}
	}
}
