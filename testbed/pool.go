// Package testbed boots a real systemd — Debian trixie inside
// systemd-nspawn — with berth installed by meson, runs a scenario script in
// it and reports the checks the script made. The bootstrapped base lives as
// a read-only btrfs subvolume on a loop-mounted pool and is cached between
// runs; each scenario boots a throwaway snapshot of it.
package testbed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"time"

	"github.com/berth-project/berth/internal/btrfs"
	"github.com/berth-project/berth/internal/image"
)

// Packages are what the base image holds: systemd with machined and
// importd, the tools berth drives, and busybox for tiny test machines.
var Packages = []string{
	"systemd", "systemd-sysv", "systemd-container", "dbus", "libpam-systemd", "polkitd",
	"btrfs-progs", "busybox-static", "mmdebstrap", "debootstrap", "zstd", "xz-utils",
	"attr", "acl", "libcap2-bin", // getfattr, setfacl, setcap: to compare trees in scenarios
	"gpg", "gpg-agent", // sign SHA256SUMS for pull scenarios; importd verifies with it
}

// System is one systemd the testbed boots: a Debian release with it.
type System struct {
	Name    string   // the systemd version, as scenarios and test names say it
	Suite   string   // the Debian release that ships it
	Extra   []string // packages beyond Packages
	AptOpts []string // for mmdebstrap --aptopt
	// Env is for the host's systemd-nspawn that boots it.
	Env []string
}

// Systems are the systemd versions berth supports, oldest first.
var Systems = []System{
	{Name: "257", Suite: "trixie"},
	// forky's Release file is past its Valid-Until date; its minimal
	// tree has no mount(8); systemd 258 and later boot only on the
	// unified cgroup hierarchy, which these hosts do not mount for nspawn
	// unless asked.
	// importd opens libcurl only when it pulls (dlopen, since 258).
	{Name: "262", Suite: "forky", Extra: []string{"mount", "libcurl4t64"}, AptOpts: []string{`Acquire::Check-Valid-Until "false"`},
		Env: []string{"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1"}},
}

// Selected are the systems tests boot: all of them, or the one
// BERTH_TESTBED_SYSTEMD names (257 or 262) for a quick local run.
func Selected() ([]System, error) {
	want := os.Getenv("BERTH_TESTBED_SYSTEMD")
	if want == "" || want == "all" {
		return Systems, nil
	}
	for _, s := range Systems {
		if s.Name == want {
			return []System{s}, nil
		}
	}
	return nil, fmt.Errorf("BERTH_TESTBED_SYSTEMD=%s: the testbed boots systemd %s", want, names())
}

func names() string {
	var n []string
	for _, s := range Systems {
		n = append(n, s.Name)
	}
	return strings.Join(n, " or ")
}

// DefaultDir holds the pool image and its mount point; BERTH_TESTBED_DIR
// overrides it.
const DefaultDir = "/var/lib/berth-testbed"

// Pool is the mounted btrfs pool that holds the base and the snapshots.
type Pool struct {
	dir  string // DefaultDir or override
	mnt  string // btrfs mount point
	lock *os.File
	log  io.Writer
}

// Open mounts the pool, creating it on first use. It holds a lock while it
// changes anything so that parallel test binaries share one base.
func Open(ctx context.Context, log io.Writer) (*Pool, error) {
	dir := os.Getenv("BERTH_TESTBED_DIR")
	if dir == "" {
		dir = DefaultDir
	}
	p := &Pool{dir: dir, mnt: filepath.Join(dir, "pool"), log: log}
	if err := os.MkdirAll(p.mnt, 0o755); err != nil {
		return nil, err
	}
	if err := p.lockPool(); err != nil {
		return nil, err
	}
	defer p.unlock()
	if mounted(p.mnt) {
		p.removeStale(ctx)
		return p, nil
	}
	img := filepath.Join(dir, "pool.img")
	if _, err := os.Stat(img); errors.Is(err, os.ErrNotExist) {
		// truncate -s 40G pool.img && mkfs.btrfs pool.img
		if err := os.Truncate(createFile(img), 40<<30); err != nil {
			return nil, fmt.Errorf("create %s: %w", img, err)
		}
		if err := p.run(ctx, "mkfs.btrfs", "-q", img); err != nil {
			os.Remove(img)
			return nil, err
		}
	}
	// mount -o loop pool.img pool
	if err := p.run(ctx, "mount", "-o", "loop", img, p.mnt); err != nil {
		return nil, err
	}
	return p, nil
}

func createFile(p string) string {
	if f, err := os.Create(p); err == nil {
		f.Close()
	}
	return p
}

func (p *Pool) lockPool() error {
	f, err := os.OpenFile(filepath.Join(p.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	p.lock = f
	return nil
}

func (p *Pool) unlock() {
	if p.lock != nil {
		p.lock.Close()
		p.lock = nil
	}
}

func mounted(dir string) bool {
	var st, parent syscall.Stat_t
	if syscall.Stat(dir, &st) != nil || syscall.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

func (p *Pool) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	var out strings.Builder
	cmd.Stdout = io.MultiWriter(&out, p.log)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out.String(), 20))
	}
	return nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// baseName names the base by what went into it, so a changed package list
// builds a new base instead of reusing a stale one.
func baseName(sys System, extra []string) string {
	// The first system's name leaves out what it lacks, so that its
	// cached base keeps its name.
	key := sys.Suite + "\n" + strings.Join(Packages, ",") + "\n" + strings.Join(append(append([]string{}, sys.Extra...), extra...), ",") + "\nv1"
	if len(sys.AptOpts) > 0 {
		key += "\n" + strings.Join(sys.AptOpts, "\n")
	}
	h := sha256.Sum256([]byte(key))
	return "base-" + hex.EncodeToString(h[:6])
}

// Base is BaseFor the first of Systems.
func (p *Pool) Base(ctx context.Context, extra ...string) (string, error) {
	return p.BaseFor(ctx, Systems[0], extra...)
}

// BaseFor returns the read-only base subvolume of sys, bootstrapping it
// with mmdebstrap on first use (about half a minute with a reachable
// mirror). extra adds packages for a derived base (benchmarks).
func (p *Pool) BaseFor(ctx context.Context, sys System, extra ...string) (string, error) {
	name := baseName(sys, extra)
	final := filepath.Join(p.mnt, name)
	if _, err := os.Stat(filepath.Join(final, "usr/lib/os-release")); err == nil {
		return final, nil
	}
	if err := p.lockPool(); err != nil {
		return "", err
	}
	defer p.unlock()
	if _, err := os.Stat(filepath.Join(final, "usr/lib/os-release")); err == nil {
		return final, nil
	}
	tmp := final + ".tmp"
	_ = p.DeleteSubvolume(ctx, tmp) // leftover of an interrupted build
	if err := withParent(tmp, btrfs.Create); err != nil {
		return "", err
	}
	pkgs := append(append(append([]string{}, Packages...), sys.Extra...), extra...)
	fmt.Fprintf(p.log, "testbed: bootstrapping %s (%s) into %s\n", sys.Suite, strings.Join(pkgs, ","), tmp)
	args := []string{"--variant=apt", "--include=" + strings.Join(pkgs, ",")}
	for _, o := range sys.AptOpts {
		args = append(args, "--aptopt="+o)
	}
	err := p.run(ctx, "mmdebstrap", append(args, sys.Suite, tmp)...)
	if err == nil {
		err = flattenNested(tmp)
	}
	if err == nil {
		err = withParent(tmp, func(d *os.File, name string) error {
			f, err := image.OpenDir(d, name)
			if err != nil {
				return err
			}
			defer f.Close()
			return btrfs.SetReadOnly(f, true)
		})
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		if derr := p.DeleteSubvolume(context.Background(), tmp); derr != nil {
			fmt.Fprintf(p.log, "testbed: cleanup of %s failed: %v\n", tmp, derr)
		}
		return "", fmt.Errorf("bootstrap testbed base: %w", err)
	}
	return final, nil
}

// flattenNested replaces the subvolumes systemd's packages create inside
// the tree (/var/lib/machines, /var/lib/portables) with plain directories:
// a snapshot would show them as dead empty directories anyway.
func flattenNested(root string) error {
	f, err := image.OpenTree(root)
	if err != nil {
		return err
	}
	defer f.Close()
	nested, err := image.Nested(f)
	if err != nil {
		return err
	}
	for i := len(nested) - 1; i >= 0; i-- {
		d, name, err := image.Parent(f, nested[i])
		if err != nil {
			return err
		}
		err = image.DeleteTree(d, name)
		if err == nil {
			err = unix.Mkdirat(int(d.Fd()), name, 0o700)
		}
		d.Close()
		if err != nil {
			return fmt.Errorf("flatten %s: %w", nested[i], err)
		}
	}
	return nil
}

// withParent calls fn with the open directory holding path and its name.
func withParent(path string, fn func(*os.File, string) error) error {
	d, err := image.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return fn(d, filepath.Base(path))
}

// Snapshot makes a writable snapshot of base named name.
func (p *Pool) Snapshot(ctx context.Context, base, name string) (string, error) {
	src, err := image.OpenTree(base)
	if err != nil {
		return "", err
	}
	defer src.Close()
	dst := filepath.Join(p.mnt, name)
	return dst, withParent(dst, func(d *os.File, name string) error { return btrfs.Snapshot(src, d, name, false) })
}

// DeleteSubvolume deletes path and every subvolume nested below it.
func (p *Pool) DeleteSubvolume(ctx context.Context, path string) error {
	return withParent(path, image.DeleteTree)
}

// removeStale deletes scenario snapshots left by killed runs: anything
// older than a scenario's longest timeout.
func (p *Pool) removeStale(ctx context.Context) {
	old, _ := filepath.Glob(filepath.Join(p.mnt, "tb-*"))
	for _, d := range old {
		// tb-NAME-UNIXTIME-RANDOM; the snapshot's own times are the base's.
		parts := strings.Split(filepath.Base(d), "-")
		if len(parts) < 4 {
			continue
		}
		started, err := strconv.ParseInt(parts[len(parts)-2], 10, 64)
		if err == nil && time.Since(time.Unix(started, 0)) > time.Hour {
			if err := p.DeleteSubvolume(ctx, d); err != nil {
				fmt.Fprintf(os.Stderr, "testbed: remove stale %s: %v\n", d, err)
			}
		}
	}
}

// Settle waits until the pool's deleted subvolumes are cleaned up and its
// dirty data is written: btrfs does both in the background, and a
// benchmark must not time them.
func (p *Pool) Settle(ctx context.Context) error {
	if err := p.run(ctx, "btrfs", "subvolume", "sync", p.mnt); err != nil {
		return err
	}
	return p.run(ctx, "sync", "--file-system", p.mnt)
}

// Dir is the pool's mount point.
func (p *Pool) Dir() string { return p.mnt }
