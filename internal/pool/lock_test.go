package pool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Cache cleaning runs alone: not while anything else holds a name, and
// nothing else starts until it ends; each is granted once the other ends.
func TestLockAlone(t *testing.T) {
	p := &Pool{Dir: t.TempDir()}
	unlockPull, err := p.Lock("web")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.LockAlone(CleanCache); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "web") {
		t.Fatalf("cleaning while web is claimed: %v, want ErrBusy naming web", err)
	}
	unlockPull()
	unlockClean, err := p.LockAlone(CleanCache)
	if err != nil {
		t.Fatalf("cleaning with nothing claimed: %v", err)
	}
	if _, err := p.Lock("db"); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "cache is being cleaned") {
		t.Errorf("claim while cleaning: %v, want ErrBusy saying the cache is being cleaned", err)
	}
	if _, err := p.LockAlone(CleanCache); !errors.Is(err, ErrBusy) {
		t.Errorf("second cleaning: %v, want ErrBusy", err)
	}
	unlockClean()
	unlockDB, err := p.Lock("db")
	if err != nil {
		t.Fatalf("claim after cleaning: %v", err)
	}
	if _, err := p.Lock("db"); !errors.Is(err, ErrBusy) {
		t.Errorf("db claimed twice: %v", err)
	}
	unlockDB()
}

// Init runs alone too: refused while a pull or clone holds a name, before
// it makes anything; a failed Init lets other work start again.
func TestInitRunsAlone(t *testing.T) {
	dir := t.TempDir()
	p := &Pool{Dir: filepath.Join(dir, "machines")}
	img := filepath.Join(dir, "machines.raw")
	unlock, err := p.Lock("web")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Init(context.Background(), 1<<30, img); !errors.Is(err, ErrBusy) {
		t.Errorf("Init while web is claimed: %v, want ErrBusy", err)
	}
	if _, err := os.Lstat(img); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused Init made %s: %v", img, err)
	}
	unlock()
	// Granted, it goes on to its own checks: 1 MiB is too small.
	if _, err := p.Init(context.Background(), 1<<20, img); err == nil || errors.Is(err, ErrBusy) {
		t.Errorf("Init with a 1 MiB image: %v, want its own refusal", err)
	}
	unlock, err = p.Lock("web")
	if err != nil {
		t.Errorf("claim after a failed Init: %v", err)
	} else {
		unlock()
	}
}
