package testbed

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Tools the testbed needs on the host; scripts/deps installs them.
var hostTools = []string{"systemd-nspawn", "mmdebstrap", "mkfs.btrfs", "meson", "mount"}

// Require skips t when the testbed cannot run here — except under CI=true,
// where an integration test that cannot run is a failure.
func Require(t testing.TB) {
	t.Helper()
	RequireRoot(t, hostTools...)
}

// RequireRoot skips t unless it runs as root with tools installed; under
// CI=true it fails instead.
func RequireRoot(t testing.TB, tools ...string) {
	t.Helper()
	var why []string
	if os.Geteuid() != 0 {
		why = append(why, "not root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			why = append(why, tool+" not installed")
		}
	}
	if testing.Short() {
		why = append(why, "-short")
	}
	if len(why) == 0 {
		return
	}
	msg := "needs root and tools: " + strings.Join(why, ", ") + " (run scripts/test as root)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

var (
	shared struct {
		pool  *Pool
		build string
		bases map[string]string // System.Name and extra packages → base
		mu    sync.Mutex
	}
	sharedOnce sync.Once
	sharedErr  error
)

// Boot runs sc on every selected systemd (Selected), each as a subtest
// named systemd-VERSION, and fails it for every failed check. The script
// finds the version in $SYSTEMD_VERSION.
func Boot(t *testing.T, sc Scenario) {
	t.Helper()
	Require(t)
	systems, err := Selected()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sharedOnce.Do(func() {
		log := testLog{}
		if shared.pool, sharedErr = Open(ctx, log); sharedErr != nil {
			return
		}
		shared.bases = map[string]string{}
		var src string
		if src, sharedErr = SourceRoot(); sharedErr == nil {
			shared.build, sharedErr = Build(ctx, src, log)
		}
	})
	if sharedErr != nil {
		t.Fatalf("testbed: %v", sharedErr)
	}
	for _, sys := range systems {
		t.Run("systemd-"+sys.Name, func(t *testing.T) {
			res := bootOn(t, sys, sc)
			if sc.Check != nil && res != nil {
				sc.Check(t, res)
			}
		})
	}
}

func bootOn(t *testing.T, sys System, sc Scenario) *Result {
	t.Helper()
	ctx := context.Background()
	shared.mu.Lock()
	key := sys.Name + "\n" + strings.Join(sc.Packages, ",")
	base, ok := shared.bases[key]
	if !ok {
		var err error
		if base, err = shared.pool.BaseFor(ctx, sys, sc.Packages...); err != nil {
			shared.mu.Unlock()
			t.Fatalf("testbed: systemd %s: %v", sys.Name, err)
		}
		shared.bases[key] = base
	}
	shared.mu.Unlock()
	// Each boot first proves which systemd it runs.
	sc.Script = "SYSTEMD_VERSION=" + sys.Name + "\n" +
		"check systemd-" + sys.Name + " sh -c \"systemctl --version | head -1 | grep '^systemd " + sys.Name + " '\"\n" + sc.Script
	res, err := shared.pool.RunOn(ctx, sys, base, shared.build, sc)
	if err != nil {
		t.Fatalf("testbed: systemd %s: %v", sys.Name, err)
	}
	if len(res.Checks) == 0 {
		t.Fatalf("scenario %s made no checks", sc.Name)
	}
	for _, c := range res.Checks {
		if !c.OK {
			t.Errorf("check %q failed:\n%s", c.Name, c.Detail)
		} else {
			t.Logf("ok %s", c.Name)
		}
	}
	if t.Failed() {
		t.Logf("journal of the testbed:\n%s", tail(res.Journal, 150))
	}
	return res
}

// LoopBtrfs mounts a fresh sparse btrfs file system of size bytes on a
// temporary directory for t and returns the mount point.
func LoopBtrfs(t testing.TB, size int64) string {
	t.Helper()
	RequireRoot(t, "mkfs.btrfs", "mount", "umount")
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "pool.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(createFile(img), size); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"mkfs.btrfs", "-q", img}, {"mount", "-o", "loop", img, mnt}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", mnt, err, out)
		}
	})
	return mnt
}

// SourceRoot is the directory holding go.mod above the working directory.
func SourceRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// testLog discards the chatter of set-up commands; their errors carry the
// relevant tail.
type testLog struct{}

func (testLog) Write(b []byte) (int, error) { return len(b), nil }
