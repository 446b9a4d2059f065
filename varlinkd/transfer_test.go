package varlinkd_test

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/varlink/go/varlink"
	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/pool"
	"github.com/berth-project/berth/testbed"
	"github.com/berth-project/berth/varlinkd"
	"github.com/berth-project/berth/varlinkd/ioberthmachine"
)

// call sends method with files as descriptors and returns the last reply.
func call(t *testing.T, c *varlink.Connection, method string, in any, files ...*os.File) (map[string]any, error) {
	t.Helper()
	ctx := context.Background()
	recv, err := c.SendWithFDs(ctx, "io.berth.Machine."+method, in, varlink.More, files)
	if err != nil {
		t.Fatal(err)
	}
	for {
		var out map[string]any
		flags, fds, err := recv(ctx, &out)
		for _, f := range fds {
			f.Close()
		}
		if err != nil {
			return nil, ioberthmachine.Dispatch_Error(err)
		}
		if flags&varlink.Continues == 0 {
			return out, nil
		}
	}
}

// TestTransferByDescriptor: export to and import from files the caller
// opened and passes as descriptors (regular files and pipes), and clear
// errors for descriptors that cannot serve.
func TestTransferByDescriptor(t *testing.T) {
	testbed.RequireRoot(t)
	dir := t.TempDir()
	srv := newServerAt(t, dir, &varlinkd.Polkit{}, varlinkd.Limits{})
	c := connectTo(t, srv)
	m := filepath.Join(dir, "m1")
	os.MkdirAll(filepath.Join(m, "etc"), 0o755)
	os.WriteFile(filepath.Join(m, "etc/os-release"), []byte("ID=test\n"), 0o644)

	out, err := os.Create(filepath.Join(t.TempDir(), "m1.tar"))
	if err != nil {
		t.Fatal(err)
	}
	reply, err := call(t, c, "Export", map[string]any{"name": "m1", "fileDescriptor": 0, "format": "tar"}, out)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	fi, _ := out.Stat()
	if size, _ := reply["size"].(float64); fi.Size() == 0 || int64(size) != fi.Size() {
		t.Errorf("Export says %v bytes, the file has %d", reply["size"], fi.Size())
	}
	if _, ok := reply["path"]; ok {
		t.Errorf("Export to a descriptor names a path: %v", reply)
	}
	out.Seek(0, io.SeekStart)
	tr := tar.NewReader(out)
	var names []string
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		names = append(names, h.Name)
	}
	if !strings.Contains(strings.Join(names, " "), "./etc/os-release") {
		t.Errorf("the archive holds %v", names)
	}

	in, _ := os.Open(out.Name())
	defer in.Close()
	if _, err := call(t, c, "Import", map[string]any{"name": "m2", "fileDescriptor": 0}, in); err != nil {
		t.Fatalf("Import from a file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "m2/etc/os-release")); string(b) != "ID=test\n" {
		t.Errorf("m2 holds %q", b)
	}

	pr, pw, _ := os.Pipe()
	go func() {
		f, _ := os.Open(out.Name())
		io.Copy(pw, f)
		f.Close()
		pw.Close()
	}()
	_, err = call(t, c, "Import", map[string]any{"name": "m3", "fileDescriptor": 0}, pr)
	pr.Close()
	if err != nil {
		t.Fatalf("Import from a pipe: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "m3/etc/os-release")); err != nil {
		t.Error(err)
	}

	// An explicit xz export leaves no xz process behind (it once started
	// one just to check the format).
	xzOut, _ := os.Create(filepath.Join(t.TempDir(), "m1.tar.xz"))
	defer xzOut.Close()
	if _, err := call(t, c, "Export", map[string]any{"name": "m1", "fileDescriptor": 0, "format": "xz"}, xzOut); err != nil {
		t.Fatalf("Export as xz: %v", err)
	}
	if kids := children("xz"); len(kids) > 0 {
		t.Errorf("xz processes left: %v", kids)
	}

	var bad *ioberthmachine.BadFileDescriptor
	ro, _ := os.Open(out.Name())
	defer ro.Close()
	if _, err := call(t, c, "Export", map[string]any{"name": "m1", "fileDescriptor": 0}, ro); !errors.As(err, &bad) || !strings.Contains(bad.Reason, "writing") {
		t.Errorf("Export to a read-only descriptor: %v", err)
	}
	if _, err := call(t, c, "Import", map[string]any{"name": "m4", "fileDescriptor": 3}, in); !errors.As(err, &bad) {
		t.Errorf("Import with an index past the descriptors: %v", err)
	}
	if _, err := call(t, c, "Import", map[string]any{"name": "m4"}); !errors.As(err, &bad) || bad.Parameter != "fileDescriptor" {
		t.Errorf("Import with neither descriptor nor path: %v", err)
	}
	d, _ := os.Open(dir)
	defer d.Close()
	if _, err := call(t, c, "Import", map[string]any{"name": "m4", "fileDescriptor": 0}, d); !errors.As(err, &bad) {
		t.Errorf("Import from a directory: %v", err)
	}
	if _, err := call(t, c, "Import", map[string]any{"name": "m4", "fileDescriptor": 0, "path": out.Name()}, in); err == nil || !strings.Contains(err.Error(), "InvalidParameter") {
		t.Errorf("Import with both: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "m4")); err == nil {
		t.Error("a refused import made m4")
	}

	// Attributes outside the allow-list cross only when asked for.
	os.WriteFile(filepath.Join(m, "etc/flagged"), []byte("x"), 0o644)
	if err := unix.Setxattr(filepath.Join(m, "etc/flagged"), "trusted.berth", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	for _, all := range []bool{false, true} {
		arch, _ := os.Create(filepath.Join(t.TempDir(), "x.tar"))
		if _, err := call(t, c, "Export", map[string]any{"name": "m1", "fileDescriptor": 0, "format": "tar", "allXattrs": all}, arch); err != nil {
			t.Fatal(err)
		}
		arch.Seek(0, io.SeekStart)
		name := fmt.Sprintf("x%v", all)
		if _, err := call(t, c, "Import", map[string]any{"name": name, "fileDescriptor": 0, "allXattrs": all}, arch); err != nil {
			t.Fatal(err)
		}
		arch.Close()
		_, err := unix.Getxattr(filepath.Join(dir, name, "etc/flagged"), "trusted.berth", nil)
		if (err == nil) != all {
			t.Errorf("allXattrs %v: trusted.berth after the round trip: %v", all, err)
		}
	}

	// Root may name paths; a symlink there is refused, not followed.
	link := filepath.Join(t.TempDir(), "link.tar")
	os.Symlink(out.Name(), link)
	var ba *ioberthmachine.BadArchive
	if _, err := call(t, c, "Import", map[string]any{"name": "m5", "path": link}); !errors.As(err, &ba) {
		t.Errorf("Import through a symlink: %v", err)
	}
	if _, err := call(t, c, "Import", map[string]any{"name": "m5", "path": out.Name()}); err != nil {
		t.Errorf("Import from root's path: %v", err)
	}
}

// TestImportOutOfSpace: a pool that fills up answers NoSpace and keeps
// nothing of the import.
func TestImportOutOfSpace(t *testing.T) {
	mnt := testbed.LoopBtrfs(t, 256<<20)
	srv := newServerAt(t, mnt, &varlinkd.Polkit{}, varlinkd.Limits{})
	c := connectTo(t, srv)
	// 400 MB that no compression or hole makes smaller.
	arch, err := os.Create(filepath.Join(t.TempDir(), "big.tar"))
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(arch)
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 400 << 20})
	if _, err := io.CopyN(tw, rand.Reader, 400<<20); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	arch.Seek(0, io.SeekStart)
	_, err = call(t, c, "Import", map[string]any{"name": "big", "fileDescriptor": 0}, arch)
	var ns *ioberthmachine.NoSpace
	if !errors.As(err, &ns) {
		t.Fatalf("Import into a full pool: %v, want NoSpace", err)
	}
	p, _ := pool.Open(mnt)
	if left := p.Leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if ents, _ := p.Entries(); len(ents) > 0 {
		t.Errorf("images after a failed import: %v", ents)
	}
}

// children lists the pids of this process's children named comm.
func children(comm string) []string {
	var out []string
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(s[close+1:])
		if s[open+1:close] == comm && len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			out = append(out, strings.TrimSpace(s[:open]))
		}
	}
	return out
}
