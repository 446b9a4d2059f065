package image_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/btrfs"
	"github.com/berth-project/berth/internal/image"
	"github.com/berth-project/berth/testbed"
)

func subvol(t *testing.T, path string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	d := open(t, filepath.Dir(path))
	if err := btrfs.Create(d, filepath.Base(path)); err != nil {
		t.Fatal(err)
	}
}

func isSubvol(t *testing.T, path string) bool {
	f, err := image.OpenTree(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return image.IsSubvolume(f)
}

func TestTreeLifecycle(t *testing.T) {
	mnt := testbed.LoopBtrfs(t, 1<<30)
	pool := open(t, mnt)
	if ok, err := btrfs.IsBtrfs(pool); !ok || err != nil {
		t.Fatalf("IsBtrfs = %v, %v", ok, err)
	}
	if ok, _ := btrfs.IsBtrfsPath(t.TempDir()); ok {
		t.Error("a tmpfs/ext4 temp dir reported as btrfs")
	}
	a := filepath.Join(mnt, "a")
	if err := image.NewTree(pool, "a"); err != nil {
		t.Fatal(err)
	}
	if err := image.NewTree(pool, "a"); err == nil {
		t.Error("creating an existing subvolume succeeded")
	}
	// Nested subvolumes, as systemd's packages create /var/lib/machines,
	// and one two directories deep inside a nested one.
	subvol(t, filepath.Join(a, "var/lib/machines"))
	subvol(t, filepath.Join(a, "var/lib/machines/x/y/inner"))
	write(t, filepath.Join(a, "file"), "x")
	if !isSubvol(t, a) || isSubvol(t, filepath.Join(a, "var")) {
		t.Error("subvolume detection wrong")
	}
	got, err := image.Nested(open(t, a))
	if err != nil || len(got) != 2 || got[0] != "var/lib/machines" || got[1] != "var/lib/machines/x/y/inner" {
		t.Errorf("Nested = %q, %v; want parents first", got, err)
	}
	idA, _ := image.ID(open(t, a))

	if err := image.CopyTree(open(t, a), pool, "whole"); err != nil {
		t.Fatal(err)
	}
	if !isSubvol(t, filepath.Join(mnt, "whole/var/lib/machines/x/y/inner")) {
		t.Error("recursive snapshot lacks the nested subvolume")
	}
	whole := open(t, filepath.Join(mnt, "whole"))
	if id, _ := image.ID(whole); id == idA || id == "" {
		t.Errorf("a snapshot's ID %q equals its source's %q", id, idA)
	}
	before := time.Now().Add(-time.Second)
	if c := image.Created(whole); c.Before(before) || c.After(time.Now()) {
		t.Errorf("Created(snapshot) = %v; want about now", c)
	}
	if err := image.SetReadOnly(whole, true); err != nil || !image.ReadOnly(whole) {
		t.Errorf("SetReadOnly: %v, ReadOnly = %v", err, image.ReadOnly(whole))
	}
	if err := os.WriteFile(filepath.Join(mnt, "whole/new"), nil, 0o644); err == nil {
		t.Error("wrote into a read-only snapshot")
	}
	// Delete copes with read-only parents and children.
	for _, n := range []string{"whole", "a"} {
		if err := image.DeleteTree(pool, n); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(mnt, n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists: %v", n, err)
		}
	}
}

// A running machine may swap the directory above a nested subvolume for a
// symlink to the host between the listing of its subvolumes and their
// snapshots; the snapshot then holds the symlink. The copy must fail
// without touching what the symlink names.
func TestSnapshotNestedRefusesSymlinks(t *testing.T) {
	mnt := testbed.LoopBtrfs(t, 1<<30)
	pool := open(t, mnt)
	host := filepath.Join(mnt, "host")
	write(t, filepath.Join(host, "sub/keep"), "host data")
	subvol(t, filepath.Join(mnt, "src"))
	subvol(t, filepath.Join(mnt, "src/dir/sub"))
	if err := btrfs.Snapshot(open(t, filepath.Join(mnt, "src")), pool, "dst", false); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(mnt, "dst/dir"))
	os.Symlink(host, filepath.Join(mnt, "dst/dir"))
	err := image.SnapshotNested(open(t, filepath.Join(mnt, "src")), open(t, filepath.Join(mnt, "dst")), "dir/sub")
	if !errors.Is(err, image.ErrSymlink) {
		t.Errorf("snapshot below a symlink = %v; want ErrSymlink", err)
	}
	if got := read(t, filepath.Join(host, "sub/keep")); got != "host data" {
		t.Errorf("host file = %q", got)
	}
	// The source side: a symlink where the subvolume's parent was.
	os.Rename(filepath.Join(mnt, "src/dir"), filepath.Join(mnt, "src/moved"))
	os.Symlink(host, filepath.Join(mnt, "src/dir"))
	if err := image.CopyTree(open(t, filepath.Join(mnt, "src")), pool, "copy"); err != nil {
		t.Fatalf("copy after the swap: %v", err) // Nested lists it where it now is
	}
	if !isSubvol(t, filepath.Join(mnt, "copy/moved/sub")) {
		t.Error("copy lacks the moved subvolume")
	}
	if fi, err := os.Lstat(filepath.Join(mnt, "copy/dir")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("copy/dir = %v, %v; want the symlink itself", fi, err)
	}
	if err := image.DeleteTree(pool, "copy"); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(host, "sub/keep")); got != "host data" {
		t.Errorf("host file = %q after delete", got)
	}
}

func TestRecords(t *testing.T) {
	mnt := testbed.LoopBtrfs(t, 1<<30)
	pool := open(t, mnt)
	s := &image.Store{Dir: filepath.Join(mnt, ".#berth/images")}
	image.NewTree(pool, "t")
	image.NewTree(pool, "other")
	tf := open(t, filepath.Join(mnt, "t"))
	id, err := image.ID(tf)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(&image.Record{Name: "t", ID: id, Kind: image.KindTemplate}); err != nil {
		t.Fatal(err)
	}
	if r := s.Get("t", tf); r == nil || r.Kind != image.KindTemplate {
		t.Errorf("Get(t) = %+v", r)
	}
	// Another tree that takes the name does not inherit the record.
	if r := s.Get("t", open(t, filepath.Join(mnt, "other"))); r != nil {
		t.Errorf("record passed to another tree: %+v", r)
	}
	if err := s.Rename("t", "t2"); err != nil {
		t.Fatal(err)
	}
	if s.Get("t", tf) != nil || s.Get("t2", tf) == nil {
		t.Error("rename did not move the record")
	}
	if fi, err := os.Stat(s.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("record directory: %v, %v; want 0700", fi, err)
	}
}
