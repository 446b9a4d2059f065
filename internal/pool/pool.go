// Package pool is berth's machine pool: the directory (/var/lib/machines
// by default) where templates and machines live as btrfs subvolumes, or as
// plain directories on other file systems, next to what machinectl made.
// Work in progress lives under hidden temporary names (machined hides
// names starting with a dot) and appears under its real name only by an
// atomic rename.
package pool

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/btrfs"
	"github.com/berth-project/berth/internal/image"
)

// DefaultDir is where machinectl and systemd-nspawn@.service look.
const DefaultDir = "/var/lib/machines"

// tmpPrefix marks berth's unfinished work; anything so named is berth's
// to delete when it starts.
const tmpPrefix = ".#berth-"

// ErrExists is returned when the target name is taken.
var ErrExists = errors.New("already exists")

// ErrBusy is returned when another operation holds the name.
var ErrBusy = errors.New("another operation on this name is running")

// Pool is one pool directory.
type Pool struct {
	Dir string

	mu   sync.Mutex
	busy map[string]bool
	// alone is the name LockAlone holds: while it is held, every other
	// claim is refused, so that work started meanwhile (a pull writing
	// blobs) cannot find its files deleted under it.
	alone string
}

// Lock claims name for one operation of this process; the returned func
// releases it. Templates, machines and cache work share the pool's names.
func (p *Pool) Lock(name string) (func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.claim(name)
}

// LockAlone claims name only if nothing else is claimed, and refuses
// every other claim until it is released.
func (p *Pool) LockAlone(name string) (func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.alone == "" && len(p.busy) > 0 {
		return nil, fmt.Errorf("%s: %w (%s)", name, ErrBusy, strings.Join(slices.Sorted(maps.Keys(p.busy)), ", "))
	}
	if _, err := p.claim(name); err != nil {
		return nil, err
	}
	p.alone = name
	return func() { p.mu.Lock(); p.alone = ""; delete(p.busy, name); p.mu.Unlock() }, nil
}

// claim marks name busy unless it is or a claim held alone is; p.mu is
// held.
func (p *Pool) claim(name string) (func(), error) {
	if p.alone != "" {
		return nil, fmt.Errorf("%s: %w (%s)", name, ErrBusy, aloneWhat(p.alone))
	}
	if p.busy == nil {
		p.busy = map[string]bool{}
	}
	if p.busy[name] {
		return nil, fmt.Errorf("%s: %w", name, ErrBusy)
	}
	p.busy[name] = true
	return func() { p.mu.Lock(); delete(p.busy, name); p.mu.Unlock() }, nil
}

// aloneWhat says what an exclusive claim is for.
func aloneWhat(name string) string {
	switch name {
	case CleanCache:
		return "the cache is being cleaned"
	case initPool:
		return "the pool is being made a btrfs; berthd restarts once it is"
	}
	return name + " runs alone"
}

// The claims held alone: by cache cleaning, and by Init.
const (
	CleanCache = ".clean"
	initPool   = ".init"
)

// Open makes dir if needed.
func Open(dir string) (*Pool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pool %s: %w", dir, err)
	}
	return &Pool{Dir: dir}, nil
}

// Restrict makes the pool root's alone (0700), as machined keeps
// /var/lib/machines: images hold device nodes and set-uid files of their
// own, which must not be reachable from the host's users. It reports
// whether the mode was wider.
func (p *Pool) Restrict() (bool, error) {
	return restrict(p.Dir)
}

func restrict(dir string) (bool, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return false, err
	}
	if fi.Mode().Perm() == 0o700 {
		return false, nil
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return false, fmt.Errorf("restrict %s: %w", dir, err)
	}
	return true, nil
}

// Btrfs reports whether the pool is on btrfs now (Init can change that).
func (p *Pool) Btrfs() bool {
	ok, _ := btrfs.IsBtrfsPath(p.Dir)
	return ok
}

// Path is where the image called name lives.
func (p *Pool) Path(name string) string { return filepath.Join(p.Dir, name) }

// Exists reports whether the pool has an entry called name, in any of the
// forms machinectl knows (directory, subvolume, .raw image).
func (p *Pool) Exists(name string) bool {
	for _, n := range []string{name, name + ".raw"} {
		if _, err := os.Lstat(p.Path(n)); err == nil {
			return true
		}
	}
	return false
}

// TempPath returns a fresh hidden path in the pool for work on name.
func (p *Pool) TempPath(name string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return filepath.Join(p.Dir, tmpPrefix+name+"-"+hex.EncodeToString(b[:]))
}

// StateName is the directory in the pool that holds berth's own data:
// records, snapshots and base trees. Its ".#" prefix keeps it from
// machined, which takes no image name starting so: machinectl
// list-images --all does not show it and machinectl clean does not
// delete it, while it stays on the pool's file system so that snapshots
// share extents with their machines.
const StateName = ".#berth"

// StateDir is the pool's state directory.
func (p *Pool) StateDir() string { return filepath.Join(p.Dir, StateName) }

// Records keeps what berth knows of each image, outside every image.
func (p *Pool) Records() *image.Store {
	return &image.Store{Dir: filepath.Join(p.StateDir(), "images")}
}

// MkdirState makes rel below the state directory (mode 0700) and returns
// its path.
func (p *Pool) MkdirState(rel string) (string, error) {
	d := filepath.Join(p.StateDir(), rel)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", fmt.Errorf("make %s: %w", d, err)
	}
	return d, nil
}

// OpenTree opens the tree at path (an image, snapshot or base tree; every
// directory above it is berth's) without following a symlink.
func (p *Pool) OpenTree(path string) (*os.File, error) { return image.OpenTree(path) }

// parent opens the directory holding path: the pool, or a directory of
// berth's state.
func parent(path string) (*os.File, string, error) {
	d, err := image.Open(filepath.Dir(path))
	if err != nil {
		return nil, "", fmt.Errorf("open %s: %w", filepath.Dir(path), err)
	}
	return d, filepath.Base(path), nil
}

// NewTree makes an empty tree at path: a subvolume on btrfs, else a
// directory.
func (p *Pool) NewTree(path string) error {
	d, name, err := parent(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return image.NewTree(d, name)
}

// CopyTree makes dst a writable copy of the tree src: a snapshot on btrfs
// (instant, whatever the size), nested subvolumes included, else a copy
// that reflinks where the file system can.
func (p *Pool) CopyTree(src, dst string) error {
	s, err := image.OpenTree(src)
	if err != nil {
		return err
	}
	defer s.Close()
	d, name, err := parent(dst)
	if err != nil {
		return err
	}
	defer d.Close()
	return image.CopyTree(s, d, name)
}

// withTree runs fn on the open tree at path.
func withTree[T any](path string, fn func(*os.File) T) (T, error) {
	f, err := image.OpenTree(path)
	if err != nil {
		var zero T
		return zero, err
	}
	defer f.Close()
	return fn(f), nil
}

// SetReadOnly marks a finished tree read-only where the file system can
// (btrfs); elsewhere it is left as it is.
func (p *Pool) SetReadOnly(path string, ro bool) error {
	err, oerr := withTree(path, func(f *os.File) error { return image.SetReadOnly(f, ro) })
	return errors.Join(oerr, err)
}

// ReadOnly reports whether the tree at path is read-only.
func (p *Pool) ReadOnly(path string) bool {
	ro, _ := withTree(path, image.ReadOnly)
	return ro
}

// Kind is "subvolume" or "directory".
func (p *Pool) Kind(path string) string {
	k, _ := withTree(path, image.Kind)
	return k
}

// Commit renames the finished tree tmp to name, failing with ErrExists
// rather than replacing anything: of two builds of one name, one wins.
func (p *Pool) Commit(tmp, name string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, p.Path(name), unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s: %w", p.Path(name), ErrExists)
		}
		return fmt.Errorf("rename %s to %s: %w", tmp, p.Path(name), err)
	}
	return nil
}

// SnapshotInto makes name in the pool a writable snapshot of the
// subvolume src, in one step (the snapshot appears whole or not at all).
func (p *Pool) SnapshotInto(src *os.File, name string) error {
	d, err := image.Open(p.Dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", p.Dir, err)
	}
	defer d.Close()
	if err := btrfs.Snapshot(src, d, name, false); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s: %w", p.Path(name), ErrExists)
		}
		return err
	}
	return nil
}

// RemoveTree deletes a tree, nested subvolumes and mounts below it
// included. A missing tree is not an error.
func (p *Pool) RemoveTree(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := UnmountBelow(path); err != nil {
		return err
	}
	d, name, err := parent(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return image.DeleteTree(d, name)
}

// UnmountBelow detaches every mount at or below path, deepest first: a
// killed bootstrapper leaves /proc, /sys and /dev mounted in its tree.
func UnmountBelow(path string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == path || strings.HasPrefix(mp, path+"/") {
			mounts = append(mounts, mp)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, mp := range mounts {
		if err := unix.Unmount(mp, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", mp, err)
		}
	}
	return nil
}

// unescapeMount decodes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Leftovers lists unfinished work found in the pool.
func (p *Pool) Leftovers() []string {
	ents, _ := os.ReadDir(p.Dir)
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			out = append(out, filepath.Join(p.Dir, e.Name()))
		}
	}
	return out
}

// Entries lists the visible images of the pool (what machinectl shows).
func (p *Pool) Entries() ([]string, error) {
	ents, err := os.ReadDir(p.Dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", p.Dir, err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Usage sums the sizes of the regular files below path and counts them:
// a tree's apparent size, for listings and progress.
func Usage(path string) (size int64, files int) { return image.UsagePath(path) }

// Migrate moves what berth kept in the pool before it had a state
// directory (.berth-snapshots, .berth-bases, which machinectl clean
// deleted) into it. Templates of that time recorded themselves inside
// their trees, which berth no longer believes: an admin adopts them again
// (berth template adopt).
func (p *Pool) Migrate() error {
	for old, now := range map[string]string{".berth-snapshots": "snapshots", ".berth-bases": "bases"} {
		from := filepath.Join(p.Dir, old)
		if _, err := os.Lstat(from); err != nil {
			continue
		}
		if _, err := p.MkdirState(""); err != nil {
			return err
		}
		if err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, filepath.Join(p.StateDir(), now), unix.RENAME_NOREPLACE); err != nil {
			return fmt.Errorf("move %s into %s: %w", from, p.StateDir(), err)
		}
	}
	return nil
}
