// Package btrfs does the few btrfs operations berth needs through the
// kernel's ioctls, so that berthd needs no btrfs-progs at run time. Each
// call names its btrfs(8) equivalent.
package btrfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// From linux/btrfs.h.
const (
	superMagic      = 0x9123683e
	firstFreeObjID  = 256 // inode number of every subvolume's root directory
	subvolRdonly    = 1 << 1
	volNameMax      = 4087
	subvolNameMax   = 4039
	iocSubvolCreate = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	iocSnapDestroy  = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
	iocSnapCreateV2 = 0x50009417 // _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
	iocGetFlags     = 0x80089419 // _IOR(0x94, 25, __u64)
	iocSetFlags     = 0x4008941a // _IOW(0x94, 26, __u64)
	iocSubvolInfo   = 0x81f8943c // _IOR(0x94, 60, struct btrfs_ioctl_get_subvol_info_args)
	iocGetRootref   = 0xd000943d // _IOWR(0x94, 61, struct btrfs_ioctl_get_subvol_rootref_args)
	iocInoLookupU   = 0xd000943e // _IOWR(0x94, 62, struct btrfs_ioctl_ino_lookup_user_args)
)

type btrfsTimespec struct {
	sec  uint64
	nsec uint32
	_    uint32
}

type subvolInfoArgs struct {
	treeID                                 uint64
	name                                   [256]byte
	parentID, dirID, generation, flags     uint64
	uuid, parentUUID, receivedUUID         [16]byte
	ctransid, otransid, stransid, rtransid uint64
	ctime, otime, stime, rtime             btrfsTimespec
	_                                      [8]uint64
}

// Created returns when the subvolume path was created (its otime; a
// snapshot's root directory keeps its source's inode times).
// (btrfs subvolume show PATH: Creation time)
func Created(path string) (time.Time, error) {
	f, err := openDir(path)
	if err != nil {
		return time.Time{}, err
	}
	defer f.Close()
	var args subvolInfoArgs
	if err := ioctl(f, iocSubvolInfo, unsafe.Pointer(&args)); err != nil {
		return time.Time{}, fmt.Errorf("subvolume info of %s: %w", path, err)
	}
	return time.Unix(int64(args.otime.sec), int64(args.otime.nsec)), nil
}

type rootrefArgs struct {
	minTreeID uint64
	refs      [255]struct{ treeID, dirID uint64 }
	numItems  uint8
	_         [7]byte
}

type inoLookupUserArgs struct {
	dirID, treeID uint64
	name          [256]byte
	path          [3824]byte // BTRFS_INO_LOOKUP_USER_PATH_MAX
}

type volArgs struct {
	fd   int64
	name [volNameMax + 1]byte
}

type volArgsV2 struct {
	fd      int64
	transid uint64
	flags   uint64
	unused  [4]uint64
	name    [subvolNameMax + 1]byte
}

// IsBtrfs reports whether path is on a btrfs file system.
func IsBtrfs(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return uint32(st.Type) == superMagic, nil
}

// IsSubvolume reports whether path is the root of a btrfs subvolume.
func IsSubvolume(path string) (bool, error) {
	ok, err := IsBtrfs(path)
	if err != nil || !ok {
		return false, err
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino == firstFreeObjID && st.Mode&unix.S_IFMT == unix.S_IFDIR, nil
}

func openDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY, 0)
}

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// Create makes the subvolume path. (btrfs subvolume create PATH)
func Create(path string) error {
	parent, err := openDir(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("create subvolume %s: %w", path, err)
	}
	defer parent.Close()
	var args volArgs
	if err := setName(args.name[:], filepath.Base(path)); err != nil {
		return fmt.Errorf("create subvolume %s: %w", path, err)
	}
	if err := ioctl(parent, iocSubvolCreate, unsafe.Pointer(&args)); err != nil {
		return fmt.Errorf("create subvolume %s: %w", path, err)
	}
	return nil
}

// Snapshot makes dst a snapshot of the subvolume src, read-only if asked.
// (btrfs subvolume snapshot [-r] SRC DST) Subvolumes nested in src appear
// as empty directories in dst; see SnapshotRecursive.
func Snapshot(src, dst string, readOnly bool) error {
	s, err := openDir(src)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", src, err)
	}
	defer s.Close()
	parent, err := openDir(filepath.Dir(dst))
	if err != nil {
		return fmt.Errorf("snapshot %s to %s: %w", src, dst, err)
	}
	defer parent.Close()
	args := volArgsV2{fd: int64(s.Fd())}
	if readOnly {
		args.flags = subvolRdonly
	}
	if err := setName(args.name[:], filepath.Base(dst)); err != nil {
		return fmt.Errorf("snapshot %s to %s: %w", src, dst, err)
	}
	if err := ioctl(parent, iocSnapCreateV2, unsafe.Pointer(&args)); err != nil {
		return fmt.Errorf("snapshot %s to %s: %w", src, dst, err)
	}
	return nil
}

// ReadOnly reports whether the subvolume path is read-only.
// (btrfs property get PATH ro)
func ReadOnly(path string) (bool, error) {
	f, err := openDir(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var flags uint64
	if err := ioctl(f, iocGetFlags, unsafe.Pointer(&flags)); err != nil {
		return false, fmt.Errorf("get flags of %s: %w", path, err)
	}
	return flags&subvolRdonly != 0, nil
}

// SetReadOnly sets or clears the subvolume's read-only flag.
// (btrfs property set PATH ro true|false)
func SetReadOnly(path string, ro bool) error {
	f, err := openDir(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var flags uint64
	if err := ioctl(f, iocGetFlags, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("get flags of %s: %w", path, err)
	}
	if ro {
		flags |= subvolRdonly
	} else {
		flags &^= subvolRdonly
	}
	if err := ioctl(f, iocSetFlags, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("set read-only=%v on %s: %w", ro, path, err)
	}
	return nil
}

// Nested returns the subvolumes below the subvolume path (not path itself),
// deepest first: the order they must be deleted in. It asks btrfs for the
// subvolume references (kernel 4.18+), which costs the same whatever the
// size of the tree, and walks the tree only where the kernel cannot say.
func Nested(path string) ([]string, error) {
	var found []string
	if err := childrenByRef(path, &found); err == nil {
		for i, j := 0, len(found)-1; i < j; i, j = i+1, j-1 {
			found[i], found[j] = found[j], found[i]
		}
		return found, nil
	}
	return nestedByWalk(path)
}

// childrenByRef appends the subvolumes below path, parents first.
// (btrfs subvolume list -o PATH, recursively)
func childrenByRef(path string, found *[]string) error {
	f, err := openDir(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var args rootrefArgs
	var children []string
	for {
		err := ioctl(f, iocGetRootref, unsafe.Pointer(&args))
		if err != nil && err != unix.EOVERFLOW {
			return err
		}
		for i := 0; i < int(args.numItems); i++ {
			lk := inoLookupUserArgs{dirID: args.refs[i].dirID, treeID: args.refs[i].treeID}
			if err := ioctl(f, iocInoLookupU, unsafe.Pointer(&lk)); err != nil {
				return err
			}
			children = append(children, filepath.Join(path, cstr(lk.path[:]), cstr(lk.name[:])))
		}
		if err != unix.EOVERFLOW {
			break
		}
		args.minTreeID = args.refs[args.numItems-1].treeID + 1
	}
	for _, c := range children {
		*found = append(*found, c)
		if err := childrenByRef(c, found); err != nil {
			return err
		}
	}
	return nil
}

func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// nestedByWalk finds nested subvolumes by their inode number (256), for
// kernels without the subvolume-reference ioctls.
func nestedByWalk(path string) ([]string, error) {
	var found []string
	var root unix.Stat_t
	if err := unix.Lstat(path, &root); err != nil {
		return nil, err
	}
	// Each subvolume has its own st_dev; a directory on any other device
	// is a mount point, not ours to walk.
	devs := map[uint64]bool{root.Dev: true}
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() || p == path {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		switch {
		case st.Ino == firstFreeObjID:
			found = append(found, p)
			devs[st.Dev] = true
		case !devs[st.Dev]:
			return filepath.SkipDir
		}
		return nil
	})
	// WalkDir visits parents before children; delete children first.
	for i, j := 0, len(found)-1; i < j; i, j = i+1, j-1 {
		found[i], found[j] = found[j], found[i]
	}
	return found, err
}

// Delete removes the subvolume path and every subvolume nested in it,
// read-only ones included. (btrfs subvolume delete -R PATH)
func Delete(path string) error {
	nested, err := Nested(path)
	if err != nil {
		return fmt.Errorf("delete subvolume %s: %w", path, err)
	}
	all := append(nested, path)
	// A read-only parent would refuse to lose the entries of its children.
	for _, p := range all {
		if ro, err := ReadOnly(p); err == nil && ro {
			if err := SetReadOnly(p, false); err != nil {
				return fmt.Errorf("delete subvolume %s: %w", path, err)
			}
		}
	}
	for _, p := range all {
		if err := deleteOne(p); err != nil {
			return err
		}
	}
	return nil
}

func deleteOne(path string) error {
	parent, err := openDir(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("delete subvolume %s: %w", path, err)
	}
	defer parent.Close()
	var args volArgs
	if err := setName(args.name[:], filepath.Base(path)); err != nil {
		return err
	}
	if err := ioctl(parent, iocSnapDestroy, unsafe.Pointer(&args)); err != nil {
		return fmt.Errorf("delete subvolume %s: %w", path, err)
	}
	return nil
}

func setName(dst []byte, name string) error {
	if len(name) >= len(dst) || name == "" || name == "." || name == ".." {
		return fmt.Errorf("bad subvolume name %q", name)
	}
	copy(dst, name)
	return nil
}

// SnapshotRecursive snapshots src to dst, and every subvolume nested in
// src into the same place below dst, so that the copy is whole (a plain
// snapshot shows nested subvolumes as empty directories). Nested
// snapshots keep their read-only flag; dst is writable unless readOnly.
func SnapshotRecursive(src, dst string, readOnly bool) error {
	nested, err := Nested(src)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", src, err)
	}
	if err := Snapshot(src, dst, false); err != nil {
		return err
	}
	// Nested lists deepest first; parents must be in place first.
	for i := len(nested) - 1; i >= 0; i-- {
		rel, _ := filepath.Rel(src, nested[i])
		target := filepath.Join(dst, rel)
		// The snapshot holds an empty directory where the subvolume was.
		if err := os.Remove(target); err != nil {
			Delete(dst)
			return fmt.Errorf("snapshot %s: replace %s: %w", src, target, err)
		}
		ro, _ := ReadOnly(nested[i])
		if err := Snapshot(nested[i], target, ro); err != nil {
			Delete(dst)
			return err
		}
	}
	if readOnly {
		return SetReadOnly(dst, true)
	}
	return nil
}

func sizeofRootref() uintptr       { return unsafe.Sizeof(rootrefArgs{}) }
func sizeofSubvolInfo() uintptr    { return unsafe.Sizeof(subvolInfoArgs{}) }
func sizeofInoLookupUser() uintptr { return unsafe.Sizeof(inoLookupUserArgs{}) }
