package btrfs_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-project/berth/btrfs"
	"github.com/berth-project/berth/testbed"
)

func TestSubvolumeLifecycle(t *testing.T) {
	mnt := testbed.LoopBtrfs(t, 1<<30)
	if ok, err := btrfs.IsBtrfs(mnt); !ok || err != nil {
		t.Fatalf("IsBtrfs = %v, %v", ok, err)
	}
	if ok, _ := btrfs.IsBtrfs(t.TempDir()); ok {
		t.Error("a tmpfs/ext4 temp dir reported as btrfs")
	}
	a := filepath.Join(mnt, "a")
	if err := btrfs.Create(a); err != nil {
		t.Fatal(err)
	}
	if err := btrfs.Create(a); err == nil {
		t.Error("creating an existing subvolume succeeded")
	}
	// Nested subvolumes, as systemd's packages create /var/lib/machines.
	os.MkdirAll(filepath.Join(a, "var/lib"), 0o755)
	nested := filepath.Join(a, "var/lib/machines")
	if err := btrfs.Create(nested); err != nil {
		t.Fatal(err)
	}
	// A subvolume two directories deep inside a nested one, as a machine
	// pool inside a machine has.
	os.MkdirAll(filepath.Join(nested, "x/y"), 0o755)
	deep := filepath.Join(nested, "x/y/inner")
	if err := btrfs.Create(deep); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(a, "file"), []byte("x"), 0o644)
	if ok, _ := btrfs.IsSubvolume(a); !ok {
		t.Error("a is not a subvolume")
	}
	if ok, _ := btrfs.IsSubvolume(filepath.Join(a, "var")); ok {
		t.Error("a plain directory reported as subvolume")
	}
	got, err := btrfs.Nested(a)
	if err != nil || len(got) != 2 || got[0] != deep || got[1] != nested {
		t.Errorf("Nested = %v, %v; want [%s %s]", got, err, deep, nested)
	}

	whole := filepath.Join(mnt, "whole")
	if err := btrfs.SnapshotRecursive(a, whole, false); err != nil {
		t.Fatal(err)
	}
	if ok, _ := btrfs.IsSubvolume(filepath.Join(whole, "var/lib/machines/x/y/inner")); !ok {
		t.Error("recursive snapshot lacks the nested subvolume")
	}
	if err := btrfs.Delete(whole); err != nil {
		t.Fatal(err)
	}

	before := time.Now().Add(-time.Second)
	ro := filepath.Join(mnt, "ro")
	if err := btrfs.Snapshot(a, ro, true); err != nil {
		t.Fatal(err)
	}
	if c, err := btrfs.Created(ro); err != nil || c.Before(before) || c.After(time.Now()) {
		t.Errorf("Created(snapshot) = %v, %v; want about now", c, err)
	}
	if r, _ := btrfs.ReadOnly(ro); !r {
		t.Error("read-only snapshot is writable")
	}
	if err := os.WriteFile(filepath.Join(ro, "new"), nil, 0o644); err == nil {
		t.Error("wrote into a read-only snapshot")
	}
	if b, err := os.ReadFile(filepath.Join(ro, "file")); err != nil || string(b) != "x" {
		t.Errorf("snapshot content = %q, %v", b, err)
	}
	if err := btrfs.SetReadOnly(ro, false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ro, "new"), nil, 0o644); err != nil {
		t.Errorf("write after clearing read-only: %v", err)
	}
	btrfs.SetReadOnly(a, true) // delete must cope with a read-only parent
	for _, p := range []string{a, ro} {
		if err := btrfs.Delete(p); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists: %v", p, err)
		}
	}
}
