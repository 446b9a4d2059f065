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
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/btrfs"
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
}

// Lock claims name for one operation of this process; the returned func
// releases it. Templates, machines and cache work share the pool's names.
func (p *Pool) Lock(name string) (func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.busy == nil {
		p.busy = map[string]bool{}
	}
	if p.busy[name] {
		return nil, fmt.Errorf("%s: %w", name, ErrBusy)
	}
	p.busy[name] = true
	return func() { p.mu.Lock(); delete(p.busy, name); p.mu.Unlock() }, nil
}

// LockAlone claims name only if nothing else is claimed.
func (p *Pool) LockAlone(name string) (func(), error) {
	p.mu.Lock()
	n := len(p.busy)
	p.mu.Unlock()
	if n > 0 {
		return nil, ErrBusy
	}
	return p.Lock(name)
}

// Open makes dir if needed.
func Open(dir string) (*Pool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pool %s: %w", dir, err)
	}
	return &Pool{Dir: dir}, nil
}

// Btrfs reports whether the pool is on btrfs now (Init can change that).
func (p *Pool) Btrfs() bool {
	ok, _ := btrfs.IsBtrfs(p.Dir)
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

// NewTree makes an empty tree at path: a subvolume on btrfs, else a
// directory.
func (p *Pool) NewTree(path string) error {
	if p.Btrfs() {
		return btrfs.Create(path)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// CopyTree makes dst a writable copy of the tree src: a snapshot on btrfs
// (instant, whatever the size), else a copy that reflinks where the file
// system can.
func (p *Pool) CopyTree(src, dst string) error {
	if ok, _ := btrfs.IsSubvolume(src); ok && p.Btrfs() {
		return btrfs.SnapshotRecursive(src, dst, false)
	}
	// cp -a --reflink=auto keeps ownership, modes, times, links, xattrs
	// and ACLs, which a tree copy must.
	out, err := exec.Command("cp", "-a", "--reflink=auto", "--", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w: %s", src, dst, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// SetReadOnly marks a finished tree read-only where the file system can
// (btrfs); elsewhere it is left as it is.
func (p *Pool) SetReadOnly(path string, ro bool) error {
	if ok, _ := btrfs.IsSubvolume(path); ok {
		return btrfs.SetReadOnly(path, ro)
	}
	return nil
}

// ReadOnly reports whether the tree at path is read-only.
func (p *Pool) ReadOnly(path string) bool {
	if ok, _ := btrfs.IsSubvolume(path); ok {
		ro, _ := btrfs.ReadOnly(path)
		return ro
	}
	return false
}

// Kind is "subvolume" or "directory".
func (p *Pool) Kind(path string) string {
	if ok, _ := btrfs.IsSubvolume(path); ok {
		return "subvolume"
	}
	return "directory"
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

// RemoveTree deletes a tree, nested subvolumes and mounts below it
// included. A missing tree is not an error.
func (p *Pool) RemoveTree(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := UnmountBelow(path); err != nil {
		return err
	}
	if ok, _ := btrfs.IsSubvolume(path); ok {
		return btrfs.Delete(path)
	}
	for _, n := range nestedSubvolumes(path) {
		if err := btrfs.Delete(n); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

func nestedSubvolumes(path string) []string {
	if ok, _ := btrfs.IsBtrfs(path); !ok {
		return nil
	}
	n, _ := btrfs.Nested(path)
	return n
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
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
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
func Usage(path string) (size int64, files int) {
	filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
				files++
			}
		}
		return nil
	})
	return size, files
}
