package varlinkd_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/berth-project/berth/varlinkd"
	"github.com/berth-project/berth/varlinkd/ioberthtemplate"
)

// serve runs a berthd on a unix socket with limits and returns its
// address and a channel that gets Serve's result.
func serve(t *testing.T, auth varlinkd.Authorizer, limits varlinkd.Limits, idle time.Duration) (string, <-chan error) {
	t.Helper()
	srv := newServer(t, auth, limits)
	sock := filepath.Join(t.TempDir(), "io.berth")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, finished := make(chan error, 1), make(chan struct{})
	go func() { done <- srv.Serve(ctx, l, idle); close(finished) }()
	t.Cleanup(func() { cancel(); <-finished })
	return sock, done
}

func dial(t *testing.T, sock string) *net.UnixConn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UnixConn)
}

// works makes a whole call on a fresh connection.
func works(t *testing.T, sock string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := varlink.NewConnection(ctx, "unix:"+sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var nst *ioberthtemplate.NoSuchTemplate
	if _, err := ioberthtemplate.Show().Call(ctx, c, "nope"); !errors.As(err, &nst) {
		t.Errorf("Show on a fresh connection: %v", err)
	}
}

// closed reports whether the server closed c within d.
func closed(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == io.EOF || err != nil && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			return true
		}
		if isTimeout(err) {
			return false
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

const showNope = `{"method":"io.berth.Template.Show","parameters":{"name":"nope"}}` + "\x00"

func TestMessageSizeCap(t *testing.T) {
	sock, _ := serve(t, &varlinkd.Polkit{}, varlinkd.Limits{MaxMessage: 1 << 20}, 0)
	c := dial(t, sock)
	chunk := strings.Repeat("x", 64<<10)
	var werr error
	for i := 0; i < 40 && werr == nil; i++ { // 2.5 MiB without a terminator
		_, werr = c.Write([]byte(chunk))
	}
	if !closed(c, 5*time.Second) {
		t.Error("a request over the cap did not end its connection")
	}
	works(t, sock) // others go on
	// Just under the cap is a request like any other.
	c2 := dial(t, sock)
	pad := `{"method":"io.berth.Template.Show","parameters":{"name":"nope"},"pad":"` + strings.Repeat("y", 1<<20-200) + `"}` + "\x00"
	if _, err := c2.Write([]byte(pad)); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 4096)
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c2.Read(reply)
	if err != nil || !strings.Contains(string(reply[:n]), "NoSuchTemplate") {
		t.Errorf("request under the cap: %q, %v", reply[:n], err)
	}
}

func TestIdleConnectionTimeout(t *testing.T) {
	sock, _ := serve(t, &varlinkd.Polkit{}, varlinkd.Limits{IdleTimeout: 300 * time.Millisecond}, 0)
	silent := dial(t, sock)
	if !closed(silent, 5*time.Second) {
		t.Error("a silent connection was kept")
	}
	// A connection that keeps calling within the timeout is kept.
	busy := dial(t, sock)
	for i := 0; i < 4; i++ {
		time.Sleep(150 * time.Millisecond)
		if _, err := busy.Write([]byte(showNope)); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		buf := make([]byte, 4096)
		busy.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := busy.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "NoSuchTemplate") {
			t.Fatalf("call %d: %q, %v", i, buf[:n], err)
		}
	}
}

func TestConnectionCaps(t *testing.T) {
	sock, _ := serve(t, &varlinkd.Polkit{}, varlinkd.Limits{MaxConnsPerUID: 2}, 0)
	a, b := dial(t, sock), dial(t, sock)
	if closed(a, 200*time.Millisecond) || closed(b, 200*time.Millisecond) {
		t.Fatal("connections under the cap were closed")
	}
	if c := dial(t, sock); !closed(c, 5*time.Second) {
		t.Error("a third connection of the same uid was kept")
	}
	a.Close()
	time.Sleep(100 * time.Millisecond)
	works(t, sock) // a place is free again
}

func TestHalfClosedClientGetsReply(t *testing.T) {
	sock, _ := serve(t, &varlinkd.Polkit{}, varlinkd.Limits{}, 0)
	c := dial(t, sock)
	if _, err := c.Write([]byte(showNope)); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil || !strings.Contains(string(reply), "NoSuchTemplate") {
		t.Errorf("reply after shutdown(SHUT_WR): %q, %v", reply, err)
	}
}

// panicky is a fake Authorizer standing for a bug in a handler, a fault
// that cannot be produced on purpose with berth's real code.
type panicky struct{}

func (panicky) Allowed(varlinkd.Caller, string, bool) (bool, error) { panic("handler bug") }

func TestPanicInCallIsContained(t *testing.T) {
	sock, _ := serve(t, panicky{}, varlinkd.Limits{}, 0)
	c := dial(t, sock)
	if _, err := c.Write([]byte(`{"method":"io.berth.Template.Remove","parameters":{"name":"x"}}` + "\x00")); err != nil {
		t.Fatal(err)
	}
	reply, _ := io.ReadAll(c)
	if !strings.Contains(string(reply), varlinkd.ErrInternal) {
		t.Errorf("reply to a call that panicked: %q", reply)
	}
	works(t, sock)
}

func TestSilentClientDoesNotBlockIdleExit(t *testing.T) {
	sock, done := serve(t, &varlinkd.Polkit{}, varlinkd.Limits{IdleTimeout: time.Hour}, 300*time.Millisecond)
	dial(t, sock)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("berthd did not exit while a silent client was connected")
	}
}

// A call without parameters, as systemd 262's varlinkctl sends one to a
// method that needs none, gets the method's answer.
func TestCallWithoutParameters(t *testing.T) {
	sock, _ := serve(t, &varlinkd.Polkit{}, varlinkd.Limits{}, 0)
	for call, want := range map[string]string{
		`{"method":"io.berth.Pool.Show"}`:                 `"btrfs"`,
		`{"method":"io.berth.Template.List","more":true}`: `io.berth.Template.NoSuchTemplate`,
		`{"method":"io.berth.Template.Show"}`:             `io.berth.Template.InvalidName`,
	} {
		c := dial(t, sock)
		if _, err := c.Write([]byte(call + "\x00")); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		reply, err := io.ReadAll(c)
		if err != nil || !strings.Contains(string(reply), want) {
			t.Errorf("%s: %q, %v; want %s", call, reply, err, want)
		}
	}
}
