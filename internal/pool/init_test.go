package pool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckUnitPath(t *testing.T) {
	for _, bad := range []string{"relative.raw", "/srv/../etc/x.raw", "/srv/a.raw\nExecStart=/bin/sh", "/srv/a\\x.raw", "/srv/a\x01.raw"} {
		if checkUnitPath(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, good := range []string{"/srv/pool.raw", "/srv/my pool/50%.raw"} {
		if err := checkUnitPath(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	if got := unitEscape("/srv/50%h.raw"); got != "/srv/50%%h.raw" {
		t.Errorf("unitEscape: %q", got)
	}
}

// TestInitTakesEmptyStateDir: records of images since removed leave empty
// directories in the state directory; they do not make the pool "not
// empty". Anything else there is refused.
func TestInitTakesEmptyStateDir(t *testing.T) {
	p, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(p.StateDir(), "images"), 0o700)
	os.MkdirAll(filepath.Join(p.StateDir(), "snapshots/m"), 0o700)
	if err := p.emptyForInit(); err != nil {
		t.Fatalf("empty state directory refused: %v", err)
	}
	os.WriteFile(filepath.Join(p.StateDir(), "images/m.json"), []byte("{}"), 0o600)
	if err := p.emptyForInit(); err == nil || !strings.Contains(err.Error(), "images/m.json") {
		t.Errorf("state directory with a record: %v", err)
	}
	os.Mkdir(p.Path("m"), 0o755)
	if err := p.emptyForInit(); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("pool with an image: %v", err)
	}
}

func TestRestrict(t *testing.T) {
	p, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(p.Dir, 0o755)
	if wider, err := p.Restrict(); err != nil || !wider {
		t.Fatalf("Restrict of a 0755 pool: %v, %v", wider, err)
	}
	if fi, _ := os.Stat(p.Dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v", fi.Mode())
	}
	if wider, err := p.Restrict(); err != nil || wider {
		t.Errorf("Restrict of a 0700 pool: %v, %v", wider, err)
	}
}
