package varlinkd_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/varlink/go/varlink"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/machine"
	"github.com/berth-project/berth/internal/pool"
	"github.com/berth-project/berth/internal/syslog"
	"github.com/berth-project/berth/internal/template"
	"github.com/berth-project/berth/varlinkd"
	"github.com/berth-project/berth/varlinkd/ioberthmachine"
	"github.com/berth-project/berth/varlinkd/ioberthpool"
	"github.com/berth-project/berth/varlinkd/ioberthtemplate"
)

// denyAll is a fake Authorizer for the one fault the test cannot produce
// for real in-process: a caller polkit refuses (the testbed covers the real
// refusal with runuser).
type denyAll struct{}

func (denyAll) Allowed(varlinkd.Caller, string, bool) (bool, error) { return false, nil }

// connect serves a fresh berthd on one end of a socketpair and returns a
// client on the other.
func connect(t *testing.T, auth varlinkd.Authorizer) *varlink.Connection {
	t.Helper()
	return connectTo(t, newServer(t, auth, varlinkd.Limits{}))
}

// connectTo serves srv on one end of a socketpair and returns a client on
// the other.
func connectTo(t testing.TB, srv *varlinkd.Server) *varlink.Connection {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	sconn, cconn := fileConn(fds[0]), fileConn(fds[1])
	ctx, cancel := context.WithCancel(context.Background())
	go srv.ServeConn(ctx, sconn)
	c, err := varlink.NewConnectionWithDialer(ctx, "unix:@berth-test", pairDialer{cconn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); cancel() })
	return c
}

// newServer makes a berthd on empty temporary pool, cache and config.
func newServer(t testing.TB, auth varlinkd.Authorizer, limits varlinkd.Limits) *varlinkd.Server {
	t.Helper()
	return newServerAt(t, t.TempDir(), auth, limits)
}

// newServerAt makes a berthd on the pool dir.
func newServerAt(t testing.TB, dir string, auth varlinkd.Authorizer, limits varlinkd.Limits) *varlinkd.Server {
	t.Helper()
	p, err := pool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := varlinkd.New(&varlinkd.Server{
		Templates: &template.Manager{Pool: p, CacheDir: t.TempDir()},
		Config:    &conf.Loader{Root: t.TempDir(), Schema: conf.Templates},
		Machines:  &machine.Manager{Pool: p},
		Auth:      auth, Log: syslog.New("berthd", io.Discard), Limits: limits,
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// fileConn makes a net.Conn of fd, keeping no other descriptor of it
// open (FileConn duplicates): a closed end must read as closed.
func fileConn(fd int) net.Conn {
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close()
	c, _ := net.FileConn(f)
	return c
}

// pairDialer "dials" the client end of the socketpair.
type pairDialer struct{ conn net.Conn }

func (d pairDialer) DialContext(context.Context, string, string) (net.Conn, error) {
	return d.conn, nil
}

func ptr[T any](v T) *T { return &v }

// TestEveryMethodAnswers calls every method of io.berth.Template: the
// generated server interface is unexported, so a wrongly typed method
// would compile and answer MethodNotImplemented.
func TestEveryMethodAnswers(t *testing.T) {
	c := connect(t, &varlinkd.Polkit{})
	ctx := context.Background()
	desc, err := c.GetInterfaceDescription(ctx, "io.berth.Template")
	if err != nil || !strings.Contains(desc, "method Create(") {
		t.Fatalf("introspection: %v", err)
	}

	_, err = ioberthtemplate.Show().Call(ctx, c, "nope")
	var nst *ioberthtemplate.NoSuchTemplate
	if !errors.As(err, &nst) || nst.Name != "nope" {
		t.Errorf("Show: %v", err)
	}
	recv, err := ioberthtemplate.List().Send(ctx, c, varlink.More)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := recv(ctx); !errors.As(err, &nst) {
		t.Errorf("List of an empty pool: %v", err)
	}
	if _, err := ioberthtemplate.List().Call(ctx, c); err == nil || !strings.Contains(err.Error(), "InvalidParameter") {
		t.Errorf("List without more: %v", err)
	}
	if err := ioberthtemplate.Remove().Call(ctx, c, "nope", nil); !errors.As(err, &nst) {
		t.Errorf("Remove: %v", err)
	}
	if _, err := ioberthtemplate.Adopt().Call(ctx, c, "nope", nil); !errors.As(err, &nst) {
		t.Errorf("Adopt: %v", err)
	}
	_, _, err = ioberthtemplate.Create().Call(ctx, c, "bad_name", &ioberthtemplate.Recipe{Suite: "bookworm"}, nil, nil)
	var inv *ioberthtemplate.InvalidName
	if !errors.As(err, &inv) || inv.Name != "bad_name" || !strings.Contains(inv.Reason, "'_'") {
		t.Errorf("Create with a bad name: %v", err)
	}
	_, _, err = ioberthtemplate.Create().Call(ctx, c, "ok", &ioberthtemplate.Recipe{Suite: "bookworm", Variant: ptr("tiny")}, nil, nil)
	var ir *ioberthtemplate.InvalidRecipe
	if !errors.As(err, &ir) || ir.Field != "variant" {
		t.Errorf("Create with a bad variant: %v", err)
	}
	_, _, err = ioberthtemplate.Create().Call(ctx, c, "ok", nil, nil, nil)
	if !errors.As(err, &ir) || ir.Field != "recipe" {
		t.Errorf("Create without recipe: %v", err)
	}
}

func TestEveryMachineMethodAnswers(t *testing.T) {
	c := connect(t, &varlinkd.Polkit{})
	ctx := context.Background()
	var (
		nsi *ioberthmachine.NoSuchImage
		nst *ioberthmachine.NoSuchTemplate
		inv *ioberthmachine.InvalidName
	)
	if _, err := ioberthmachine.Show().Call(ctx, c, "nope"); !errors.As(err, &nsi) || nsi.Name != "nope" {
		t.Errorf("Show: %v", err)
	}
	recv, err := ioberthmachine.List().Send(ctx, c, varlink.More)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := recv(ctx); !errors.As(err, &nsi) {
		t.Errorf("List of an empty pool: %v", err)
	}
	if _, err := ioberthmachine.Clone().Call(ctx, c, "tmpl", "m", nil); !errors.As(err, &nst) || nst.Name != "tmpl" {
		t.Errorf("Clone from a missing template: %v", err)
	}
	if _, err := ioberthmachine.Clone().Call(ctx, c, "tmpl", "bad_name", nil); !errors.As(err, &inv) || inv.Name != "bad_name" {
		t.Errorf("Clone to a bad name: %v", err)
	}
	if err := ioberthmachine.Remove().Call(ctx, c, "nope", nil, nil); !errors.As(err, &nsi) {
		t.Errorf("Remove: %v", err)
	}
	if err := ioberthmachine.Rename().Call(ctx, c, "nope", "other", nil); !errors.As(err, &nsi) {
		t.Errorf("Rename: %v", err)
	}
	if _, err := ioberthmachine.Snapshot().Call(ctx, c, "nope", "s1", nil); !errors.As(err, &nsi) {
		t.Errorf("Snapshot: %v", err)
	}
	if err := ioberthmachine.Restore().Call(ctx, c, "nope", "s1", nil); !errors.As(err, &nsi) {
		t.Errorf("Restore: %v", err)
	}
	if err := ioberthmachine.RemoveSnapshot().Call(ctx, c, "nope", "s1", nil); !errors.As(err, &nsi) {
		t.Errorf("RemoveSnapshot: %v", err)
	}
	if _, _, _, err := ioberthmachine.Export().Call(ctx, c, "nope", nil, ptr("/tmp/x.tar"), nil, nil, nil, nil); !errors.As(err, &nsi) {
		t.Errorf("Export: %v", err)
	}
	var ba *ioberthmachine.BadArchive
	if _, _, err := ioberthmachine.Import().Call(ctx, c, nil, ptr("/nonexistent.tar"), "imp", nil, nil); !errors.As(err, &ba) {
		t.Errorf("Import: %v", err)
	}
	var df *ioberthmachine.DownloadFailed
	if _, _, err := ioberthmachine.Pull().Call(ctx, c, "ftp://x/y.tar", "p", nil, nil); !errors.As(err, &df) {
		t.Errorf("Pull: %v", err)
	}
	if _, _, _, _, err := ioberthmachine.Publish().Call(ctx, c, "nope", "127.0.0.1:1/x/y:z", nil, nil, nil); !errors.As(err, &nsi) {
		t.Errorf("Publish: %v", err)
	}
	if _, _, _, _, err := ioberthmachine.Publish().Call(ctx, c, "nope", "127.0.0.1:1/x/y:z", ptr("xz"), nil, nil); err == nil || !strings.Contains(err.Error(), "InvalidParameter") {
		t.Errorf("Publish xz: %v", err)
	}
	recvSnap, err := ioberthmachine.ListSnapshots().Send(ctx, c, varlink.More, "nope")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := recvSnap(ctx); !errors.As(err, &nsi) {
		t.Errorf("ListSnapshots: %v", err)
	}
}

func TestEveryPoolMethodAnswers(t *testing.T) {
	c := connect(t, &varlinkd.Polkit{})
	ctx := context.Background()
	path, isBtrfs, _, err := ioberthpool.Show().Call(ctx, c)
	if err != nil || path == "" {
		t.Errorf("Show: %q %v %v", path, isBtrfs, err)
	}
	recv, err := ioberthpool.ListCache().Send(ctx, c, varlink.More)
	if err != nil {
		t.Fatal(err)
	}
	var empty *ioberthpool.CacheEmpty
	if _, _, err := recv(ctx); !errors.As(err, &empty) {
		t.Errorf("ListCache of an empty cache: %v", err)
	}
	if freed, err := ioberthpool.CleanCache().Call(ctx, c, nil); err != nil || freed != 0 {
		t.Errorf("CleanCache: %d %v", freed, err)
	}
	_, _, _, err = ioberthpool.Init().Call(ctx, c, 1, nil, nil)
	var pu *ioberthpool.PoolUnusable
	if !errors.As(err, &pu) || !strings.Contains(pu.Reason, "too small") {
		t.Errorf("Init with a tiny size: %v", err)
	}
}

func TestRefusedCallerChangesNothing(t *testing.T) {
	c := connect(t, denyAll{})
	ctx := context.Background()
	var pd *ioberthtemplate.PermissionDenied
	_, _, err := ioberthtemplate.Create().Call(ctx, c, "x", &ioberthtemplate.Recipe{Suite: "bookworm"}, nil, nil)
	if !errors.As(err, &pd) || pd.Action != varlinkd.ActionManageTemplates {
		t.Errorf("Create: %v", err)
	}
	if err := ioberthtemplate.Remove().Call(ctx, c, "x", nil); !errors.As(err, &pd) {
		t.Errorf("Remove: %v", err)
	}
	var mpd *ioberthmachine.PermissionDenied
	if _, err := ioberthmachine.Clone().Call(ctx, c, "a", "b", nil); !errors.As(err, &mpd) || mpd.Action != varlinkd.ActionManageMachines {
		t.Errorf("Clone: %v", err)
	}
	if err := ioberthmachine.Remove().Call(ctx, c, "a", nil, nil); !errors.As(err, &mpd) {
		t.Errorf("Remove: %v", err)
	}
	if err := ioberthmachine.Rename().Call(ctx, c, "a", "b", nil); !errors.As(err, &mpd) {
		t.Errorf("Rename: %v", err)
	}
	if _, err := ioberthmachine.Snapshot().Call(ctx, c, "a", "s", nil); !errors.As(err, &mpd) {
		t.Errorf("Snapshot: %v", err)
	}
	if err := ioberthmachine.Restore().Call(ctx, c, "a", "s", nil); !errors.As(err, &mpd) {
		t.Errorf("Restore: %v", err)
	}
	if err := ioberthmachine.RemoveSnapshot().Call(ctx, c, "a", "s", nil); !errors.As(err, &mpd) {
		t.Errorf("RemoveSnapshot: %v", err)
	}
	if _, _, _, err := ioberthmachine.Export().Call(ctx, c, "a", nil, ptr("/tmp/a.tar"), nil, nil, nil, nil); !errors.As(err, &mpd) {
		t.Errorf("Export: %v", err)
	}
	if _, _, err := ioberthmachine.Import().Call(ctx, c, nil, ptr("/tmp/a.tar"), "a", nil, nil); !errors.As(err, &mpd) {
		t.Errorf("Import: %v", err)
	}
	if _, _, err := ioberthmachine.Pull().Call(ctx, c, "http://127.0.0.1/a.tar", "a", nil, nil); !errors.As(err, &mpd) {
		t.Errorf("Pull: %v", err)
	}
	var ppd *ioberthpool.PermissionDenied
	if _, err := ioberthpool.CleanCache().Call(ctx, c, nil); !errors.As(err, &ppd) || ppd.Action != varlinkd.ActionManagePool {
		t.Errorf("CleanCache: %v", err)
	}
	if _, _, _, err := ioberthpool.Init().Call(ctx, c, 1<<30, nil, nil); !errors.As(err, &ppd) {
		t.Errorf("Init: %v", err)
	}
	// Reading stays open to everyone.
	var nst *ioberthtemplate.NoSuchTemplate
	if _, err := ioberthtemplate.Show().Call(ctx, c, "x"); !errors.As(err, &nst) {
		t.Errorf("Show: %v", err)
	}
}
