package pool

import (
	"errors"
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
