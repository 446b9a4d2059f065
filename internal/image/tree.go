package image

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/btrfs"
)

// IsSubvolume reports whether the open directory f is a btrfs subvolume.
func IsSubvolume(f *os.File) bool {
	ok, _ := btrfs.IsSubvolume(f)
	return ok
}

// Kind is "subvolume" or "directory".
func Kind(f *os.File) string {
	if IsSubvolume(f) {
		return "subvolume"
	}
	return "directory"
}

// ReadOnly reports whether the tree f is read-only (a read-only subvolume).
func ReadOnly(f *os.File) bool {
	if !IsSubvolume(f) {
		return false
	}
	ro, _ := btrfs.ReadOnly(f)
	return ro
}

// SetReadOnly marks a tree read-only where the file system can (btrfs);
// elsewhere it is left as it is.
func SetReadOnly(f *os.File, ro bool) error {
	if !IsSubvolume(f) {
		return nil
	}
	return btrfs.SetReadOnly(f, ro)
}

// Created is when the tree f was made: the subvolume's creation time on
// btrfs (a snapshot's root inode keeps its source's times), else its birth
// time where the file system records one.
func Created(f *os.File) time.Time {
	if IsSubvolume(f) {
		if info, err := btrfs.SubvolInfo(f); err == nil {
			return info.Created
		}
	}
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_BTIME, &st); err == nil && st.Mask&unix.STATX_BTIME != 0 {
		return time.Unix(st.Btime.Sec, int64(st.Btime.Nsec))
	}
	return time.Time{}
}

// ID names the tree f itself, whatever it is called: its subvolume UUID
// on btrfs (a snapshot or clone gets its own), else its inode number.
// Records are tied to it so that they do not pass to another tree that
// takes the name.
func ID(f *os.File) (string, error) {
	if IsSubvolume(f) {
		info, err := btrfs.SubvolInfo(f)
		if err != nil {
			return "", err
		}
		return "btrfs:" + hex.EncodeToString(info.UUID[:]), nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", &PathError{"stat", f.Name(), err}
	}
	return fmt.Sprintf("inode:%d", st.Ino), nil
}

// ParentID is the ID (as ID gives it) of the subvolume the tree at f was
// snapshotted from, or "" if it was not or is no subvolume.
func ParentID(f *os.File) string {
	if !IsSubvolume(f) {
		return ""
	}
	info, err := btrfs.SubvolInfo(f)
	if err != nil || info.ParentUUID == [16]byte{} {
		return ""
	}
	return "btrfs:" + hex.EncodeToString(info.ParentUUID[:])
}

// Nested returns the subvolumes below the tree root as paths relative to
// it, parents first (the order to recreate them in; delete in reverse).
func Nested(root *os.File) ([]string, error) {
	if ok, _ := btrfs.IsBtrfs(root); !ok {
		return nil, nil
	}
	if IsSubvolume(root) {
		var out []string
		if err := nestedByRef(root, root, "", &out); err == nil {
			return out, nil
		}
	}
	return nestedByWalk(root)
}

// nestedByRef appends what the kernel lists below the subvolume sub
// (at prefix below top), then what lies below each of those.
func nestedByRef(top, sub *os.File, prefix string, out *[]string) error {
	children, err := btrfs.Children(sub)
	if err != nil {
		return err
	}
	for _, c := range children {
		rel := path.Join(prefix, c)
		*out = append(*out, rel)
		f, err := OpenDir(top, rel)
		if err != nil {
			return err
		}
		err = nestedByRef(top, f, rel, out)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// nestedByWalk finds nested subvolumes by their inode number, for
// kernels without the subvolume-reference ioctls and for plain
// directories on btrfs.
func nestedByWalk(root *os.File) ([]string, error) {
	var out []string
	err := Walk(root, func(e *Entry) error {
		if e.Path != "." && e.Stat.Mode&unix.S_IFMT == unix.S_IFDIR && e.Stat.Ino == btrfs.FirstFreeObjID {
			out = append(out, e.Path)
		}
		return nil
	})
	return out, err
}

// NewTree makes an empty tree name in parent: a subvolume on btrfs, else
// a directory.
func NewTree(parent *os.File, name string) error {
	if ok, _ := btrfs.IsBtrfs(parent); ok {
		return btrfs.Create(parent, name)
	}
	if err := unix.Mkdirat(int(parent.Fd()), name, 0o755); err != nil {
		return &PathError{"create", join(parent.Name(), name), err}
	}
	return nil
}

// CopyTree makes name in parent a writable copy of the tree src: a
// snapshot on btrfs (instant, whatever the size), nested subvolumes
// included, else a copy that reflinks where the file system can.
func CopyTree(src, parent *os.File, name string) error {
	if ok, _ := btrfs.IsBtrfs(parent); ok && IsSubvolume(src) {
		return snapshotTree(src, parent, name)
	}
	// cp -a --reflink=auto keeps ownership, modes, times, links, xattrs and
	// ACLs, and never follows the tree's symlinks. Both ends are named by
	// the descriptors already open (fds 3 and 4 in cp), not by paths
	// resolved again.
	cmd := exec.Command("cp", "-a", "--reflink=auto", "-T", "--", "/proc/self/fd/3/.", "/proc/self/fd/4/"+name)
	cmd.ExtraFiles = []*os.File{src, parent}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("copy %s to %s: %w: %s", src.Name(), join(parent.Name(), name), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// snapshotTree snapshots src to name in parent, and every subvolume nested
// in src into the same place below it, so that the copy is whole (a plain
// snapshot shows nested subvolumes as empty directories). src may be a
// running machine: every nested path is opened without following
// symlinks, in src and in the snapshot, so a tree that changes meanwhile
// makes the copy fail, never reach outside. Nested snapshots keep their
// read-only flag; the top one is writable.
func snapshotTree(src, parent *os.File, name string) (err error) {
	nested, err := Nested(src)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", src.Name(), err)
	}
	if err := btrfs.Snapshot(src, parent, name, false); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if derr := DeleteTree(parent, name); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	dst, err := OpenDir(parent, name)
	if err != nil {
		return err
	}
	defer dst.Close()
	for _, rel := range nested {
		if err := snapshotNested(src, dst, rel); err != nil {
			return fmt.Errorf("snapshot %s: %w", src.Name(), err)
		}
	}
	return nil
}

func snapshotNested(src, dst *os.File, rel string) error {
	s, err := OpenDir(src, rel)
	if err != nil {
		return err
	}
	defer s.Close()
	if !IsSubvolume(s) {
		return &PathError{"snapshot", s.Name(), errors.New("no longer a subvolume")}
	}
	p, base, err := Parent(dst, rel)
	if err != nil {
		return err
	}
	defer p.Close()
	// The snapshot holds an empty directory where the subvolume was.
	if err := unix.Unlinkat(int(p.Fd()), base, unix.AT_REMOVEDIR); err != nil {
		return &PathError{"replace", join(p.Name(), base), err}
	}
	ro, _ := btrfs.ReadOnly(s)
	return btrfs.Snapshot(s, p, base, ro)
}

// DeleteTree removes the tree name in parent, nested subvolumes and
// read-only ones included. A missing tree is not an error. Mounts below
// it must be gone first (see UnmountBelow).
func DeleteTree(parent *os.File, name string) error {
	t, err := OpenDir(parent, name)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer t.Close()
	nested, err := Nested(t)
	if err != nil {
		return fmt.Errorf("delete %s: %w", t.Name(), err)
	}
	// A read-only parent would refuse to lose the entries of its children.
	top := IsSubvolume(t)
	if top {
		SetReadOnly(t, false)
	}
	for _, rel := range nested {
		if f, err := OpenDir(t, rel); err == nil {
			SetReadOnly(f, false)
			f.Close()
		}
	}
	for i := len(nested) - 1; i >= 0; i-- {
		p, base, err := Parent(t, nested[i])
		if err != nil {
			return err
		}
		err = btrfs.Destroy(p, base)
		p.Close()
		if err != nil {
			return err
		}
	}
	if top {
		return btrfs.Destroy(parent, name)
	}
	// os.RemoveAll opens every directory below with O_NOFOLLOW relative to
	// its parent; the start is the descriptor already held.
	if err := os.RemoveAll(fmt.Sprintf("/proc/self/fd/%d/%s", parent.Fd(), name)); err != nil {
		return &PathError{"remove", join(parent.Name(), name), err}
	}
	return nil
}

// TempName returns a fresh name for work in progress on name. The prefix
// ".#" hides it from machined, which takes no image name starting so.
func TempName(prefix, name string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + name + "-" + hex.EncodeToString(b[:])
}
