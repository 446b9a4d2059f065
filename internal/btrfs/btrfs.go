// Package btrfs does the few btrfs operations berth needs through the
// kernel's ioctls, so that berthd needs no btrfs-progs at run time. Each
// call names its btrfs(8) equivalent. Every call takes open directories
// and names in them, never paths: which directory is meant is decided by
// whoever opened it (package image, the trust boundary).
package btrfs

import (
	"fmt"
	"os"
	"path"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// From linux/btrfs.h.
const (
	superMagic      = 0x9123683e
	FirstFreeObjID  = 256 // inode number of every subvolume's root directory
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

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// IsBtrfs reports whether the open file f is on a btrfs file system.
func IsBtrfs(f *os.File) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", f.Name(), err)
	}
	return uint32(st.Type) == superMagic, nil
}

// IsBtrfsPath reports whether path is on btrfs (the pool's own directory,
// which is the admin's to name).
func IsBtrfsPath(p string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", p, err)
	}
	return uint32(st.Type) == superMagic, nil
}

// IsSubvolume reports whether the open directory f is the root of a btrfs
// subvolume.
func IsSubvolume(f *os.File) (bool, error) {
	ok, err := IsBtrfs(f)
	if err != nil || !ok {
		return false, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	return st.Ino == FirstFreeObjID && st.Mode&unix.S_IFMT == unix.S_IFDIR, nil
}

// Info is what btrfs records of a subvolume.
type Info struct {
	UUID [16]byte
	// ParentUUID is the UUID of the subvolume this one is a snapshot of
	// (zero if none): kernel metadata, which nothing inside can forge.
	ParentUUID [16]byte
	Created    time.Time // otime: a snapshot's root inode keeps its source's times
}

// SubvolInfo describes the subvolume whose root f is.
// (btrfs subvolume show PATH)
func SubvolInfo(f *os.File) (Info, error) {
	var args subvolInfoArgs
	if err := ioctl(f, iocSubvolInfo, unsafe.Pointer(&args)); err != nil {
		return Info{}, fmt.Errorf("subvolume info of %s: %w", f.Name(), err)
	}
	return Info{UUID: args.uuid, ParentUUID: args.parentUUID, Created: time.Unix(int64(args.otime.sec), int64(args.otime.nsec))}, nil
}

// Create makes the subvolume name in the directory parent.
// (btrfs subvolume create PARENT/NAME)
func Create(parent *os.File, name string) error {
	var args volArgs
	if err := setName(args.name[:], name); err != nil {
		return fmt.Errorf("create subvolume %s: %w", path.Join(parent.Name(), name), err)
	}
	if err := ioctl(parent, iocSubvolCreate, unsafe.Pointer(&args)); err != nil {
		return fmt.Errorf("create subvolume %s: %w", path.Join(parent.Name(), name), err)
	}
	return nil
}

// Snapshot makes name in parent a snapshot of the subvolume src,
// read-only if asked. (btrfs subvolume snapshot [-r] SRC PARENT/NAME)
// Subvolumes nested in src appear as empty directories in the snapshot.
func Snapshot(src, parent *os.File, name string, readOnly bool) error {
	args := volArgsV2{fd: int64(src.Fd())}
	if readOnly {
		args.flags = subvolRdonly
	}
	dst := path.Join(parent.Name(), name)
	if err := setName(args.name[:], name); err != nil {
		return fmt.Errorf("snapshot %s to %s: %w", src.Name(), dst, err)
	}
	if err := ioctl(parent, iocSnapCreateV2, unsafe.Pointer(&args)); err != nil {
		return fmt.Errorf("snapshot %s to %s: %w", src.Name(), dst, err)
	}
	return nil
}

// Destroy deletes the subvolume name in parent, which must hold no
// other subvolume. (btrfs subvolume delete PARENT/NAME)
func Destroy(parent *os.File, name string) error {
	var args volArgs
	if err := setName(args.name[:], name); err != nil {
		return err
	}
	if err := ioctl(parent, iocSnapDestroy, unsafe.Pointer(&args)); err != nil {
		return fmt.Errorf("delete subvolume %s: %w", path.Join(parent.Name(), name), err)
	}
	return nil
}

// ReadOnly reports whether the subvolume f is read-only.
// (btrfs property get PATH ro)
func ReadOnly(f *os.File) (bool, error) {
	var flags uint64
	if err := ioctl(f, iocGetFlags, unsafe.Pointer(&flags)); err != nil {
		return false, fmt.Errorf("get flags of %s: %w", f.Name(), err)
	}
	return flags&subvolRdonly != 0, nil
}

// SetReadOnly sets or clears the subvolume's read-only flag.
// (btrfs property set PATH ro true|false)
func SetReadOnly(f *os.File, ro bool) error {
	var flags uint64
	if err := ioctl(f, iocGetFlags, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("get flags of %s: %w", f.Name(), err)
	}
	if ro {
		flags |= subvolRdonly
	} else {
		flags &^= subvolRdonly
	}
	if err := ioctl(f, iocSetFlags, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("set read-only=%v on %s: %w", ro, f.Name(), err)
	}
	return nil
}

// Children returns the paths, relative to the subvolume f, of the
// subvolumes directly below it. It asks btrfs for the subvolume references
// (kernel 4.18+), which costs the same whatever the size of the tree.
// (btrfs subvolume list -o PATH)
func Children(f *os.File) ([]string, error) {
	var args rootrefArgs
	var out []string
	for {
		err := ioctl(f, iocGetRootref, unsafe.Pointer(&args))
		if err != nil && err != unix.EOVERFLOW {
			return nil, fmt.Errorf("subvolumes below %s: %w", f.Name(), err)
		}
		for i := 0; i < int(args.numItems); i++ {
			lk := inoLookupUserArgs{dirID: args.refs[i].dirID, treeID: args.refs[i].treeID}
			if err := ioctl(f, iocInoLookupU, unsafe.Pointer(&lk)); err != nil {
				return nil, fmt.Errorf("subvolumes below %s: %w", f.Name(), err)
			}
			out = append(out, path.Join(cstr(lk.path[:]), cstr(lk.name[:])))
		}
		if err != unix.EOVERFLOW {
			return out, nil
		}
		args.minTreeID = args.refs[args.numItems-1].treeID + 1
	}
}

func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func setName(dst []byte, name string) error {
	if len(name) >= len(dst) || name == "" || name == "." || name == ".." {
		return fmt.Errorf("bad subvolume name %q", name)
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return fmt.Errorf("bad subvolume name %q", name)
		}
	}
	copy(dst, name)
	return nil
}

func sizeofRootref() uintptr       { return unsafe.Sizeof(rootrefArgs{}) }
func sizeofSubvolInfo() uintptr    { return unsafe.Sizeof(subvolInfoArgs{}) }
func sizeofInoLookupUser() uintptr { return unsafe.Sizeof(inoLookupUserArgs{}) }
