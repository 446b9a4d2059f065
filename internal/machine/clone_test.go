package machine

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-project/berth/internal/btrfs"
	"github.com/berth-project/berth/internal/image"
	"github.com/berth-project/berth/internal/pool"
	"github.com/berth-project/berth/testbed"
)

// template makes a read-only subvolume NAME in p recorded as a template,
// with etc/machine-id holding id ("" for an empty one, as berth leaves
// its templates).
func template(t *testing.T, p *pool.Pool, name, id string) {
	t.Helper()
	templateWith(t, p, name, map[string][]byte{"etc/machine-id": []byte(id)})
}

// templateWith makes a read-only template of files (path → content;
// etc/machine-id 0444, as berth leaves it).
func templateWith(t *testing.T, p *pool.Pool, name string, files map[string][]byte) {
	t.Helper()
	if err := p.NewTree(p.Path(name)); err != nil {
		t.Fatal(err)
	}
	for rel, data := range files {
		full := filepath.Join(p.Path(name), rel)
		os.MkdirAll(filepath.Dir(full), 0o755)
		mode := os.FileMode(0o644)
		if rel == "etc/machine-id" {
			mode = 0o444
		}
		if err := os.WriteFile(full, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	f, err := p.OpenTree(p.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rid, _ := image.ID(f)
	if err := p.Records().Put(&image.Record{Name: name, ID: rid, Kind: image.KindTemplate}); err != nil {
		t.Fatal(err)
	}
	if err := btrfs.SetReadOnly(f, true); err != nil {
		t.Fatal(err)
	}
}

// TestCloneLikeMachinectl: a template with nothing to reset and nothing
// nested is cloned as machinectl clones, one snapshot and no other write;
// the clone still knows its template (from the subvolume's parent UUID),
// after a restore too. A template with an identity takes the full path.
func TestCloneLikeMachinectl(t *testing.T) {
	p, err := pool.Open(testbed.LoopBtrfs(t, 256<<20))
	if err != nil {
		t.Fatal(err)
	}
	m := &Manager{Pool: p}
	ctx := context.Background()
	template(t, p, "clean", "")
	template(t, p, "named", "0123456789abcdef0123456789abcdef\n")

	img, err := m.Clone(ctx, "clean", "c1")
	if err != nil {
		t.Fatal(err)
	}
	if img.Template != "clean" || img.Kind != image.KindMachine || img.ReadOnly {
		t.Errorf("clone: %+v", img)
	}
	if _, err := os.Stat(filepath.Join(p.StateDir(), "images/c1.json")); !os.IsNotExist(err) {
		t.Errorf("the plain snapshot clone wrote a record: %v", err)
	}
	list, _ := m.List()
	for _, i := range list {
		if i.Name == "c1" && i.Template != "clean" {
			t.Errorf("List: %+v", i)
		}
	}
	if _, err := m.Clone(ctx, "clean", "c1"); err == nil {
		t.Error("a second clone of the same name")
	}
	if _, err := m.Snapshot(ctx, "c1", "s"); err != nil {
		t.Fatal(err)
	}
	if err := m.Restore(ctx, "c1", "s"); err != nil {
		t.Fatal(err)
	}
	if img, _ := m.Show("c1"); img == nil || img.Template != "clean" {
		t.Errorf("after restore: %+v", img)
	}

	img, err = m.Clone(ctx, "named", "c2")
	if err != nil {
		t.Fatal(err)
	}
	if img.Template != "named" {
		t.Errorf("clone of a template with an identity: %+v", img)
	}
	if b, err := os.ReadFile(filepath.Join(p.Path("c2"), "etc/machine-id")); err != nil || len(b) != 0 {
		t.Errorf("the clone's machine-id holds %q (%v)", b, err)
	}
	if _, err := os.Stat(filepath.Join(p.StateDir(), "images/c2.json")); err != nil {
		t.Errorf("no record for the full-path clone: %v", err)
	}
}
