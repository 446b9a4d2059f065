package varlinkd_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/varlinkd"
)

// FuzzMessage sends berthd any bytes as a request: it answers or hangs
// up, within seconds, never panics, and serves the next caller. Callers
// are refused every change (denyAll), so no fuzzed call can build or
// delete anything; parsing, dispatch and the read-only methods are what
// is fuzzed.
func FuzzMessage(f *testing.F) {
	for _, seed := range []string{
		`{"method":"org.varlink.service.GetInfo"}`,
		`{"method":"org.varlink.service.GetInterfaceDescription","parameters":{"interface":"io.berth.Machine"}}`,
		`{"method":"io.berth.Machine.List","more":true}`,
		`{"method":"io.berth.Machine.Show","parameters":{"name":"../../etc"}}`,
		`{"method":"io.berth.Machine.Export","parameters":{"name":"x","fileDescriptor":7},"more":true}`,
		`{"method":"io.berth.Template.List","more":true,"oneway":true}`,
		`{"method":"io.berth.Pool.Show","parameters":[1,2,3]}`,
		`{"method":`, "\x00\x00", `{"method":"x.y.Z","upgrade":true}`,
	} {
		f.Add([]byte(seed))
	}
	srv := newServer(f, denyAll{}, varlinkd.Limits{IdleTimeout: 2 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	f.Fuzz(func(t *testing.T, msg []byte) {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		sconn, cconn := fileConn(fds[0]), fileConn(fds[1])
		defer cconn.Close()
		done := make(chan struct{})
		go func() { srv.ServeConn(ctx, sconn); close(done) }()
		cconn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := cconn.Write(append(msg, 0)); err != nil {
			return // hung up already: allowed
		}
		cconn.(*net.UnixConn).CloseWrite()
		// A reset is a hang-up too (berthd closed with requests unread).
		if _, err := io.ReadAll(cconn); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("no answer and no hang-up: %v", err)
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the connection is still served after the caller left")
		}
		var vendor, product, version, url string
		var ifaces []string
		if err := connectTo(t, srv).GetInfo(ctx, &vendor, &product, &version, &url, &ifaces); err != nil {
			t.Fatalf("berthd no longer answers: %v", err)
		}
	})
}
