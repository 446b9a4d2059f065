package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	"golang.org/x/sys/unix"
)

// MaxDepth bounds how deep Walk goes: each level holds a descriptor, and an
// image can nest directories far deeper than any path a tool could name.
const MaxDepth = 1024

// ErrTooDeep is returned by Walk for a tree nested deeper than MaxDepth.
var ErrTooDeep = errors.New("directories nested too deep")

// SkipDir, returned by a Walk callback for a directory, skips its contents.
var SkipDir = fs.SkipDir

// firstFreeObjID is the inode number of every btrfs subvolume's root.
const firstFreeObjID = 256

// Entry is one file met by Walk.
type Entry struct {
	Dir  *os.File // the directory that holds it; valid during the callback
	Name string   // its name in Dir ("." for the root)
	Path string   // relative to the root of the walk, "." for the root
	Stat unix.Stat_t
}

// Walk calls fn for root and everything below it, parents before their
// contents, names sorted. It opens each directory relative to its parent
// without following symlinks, so it stays inside root whatever the tree
// does meanwhile. It enters nested btrfs subvolumes but no other file
// system (a mount left below an image is not the image's).
func Walk(root *os.File, fn func(e *Entry) error) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(root.Fd()), &st); err != nil {
		return &PathError{"stat", root.Name(), err}
	}
	e := &Entry{Dir: root, Name: ".", Path: ".", Stat: st}
	if err := fn(e); err != nil {
		if err == SkipDir {
			return nil
		}
		return err
	}
	return walkDir(root, ".", st.Dev, 1, fn)
}

func walkDir(dir *os.File, rel string, dev uint64, depth int, fn func(e *Entry) error) error {
	if depth > MaxDepth {
		return &PathError{"walk", join(dir.Name(), ""), ErrTooDeep}
	}
	names, err := readNames(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // gone meanwhile
			}
			return &PathError{"stat", join(dir.Name(), name), err}
		}
		p := name
		if rel != "." {
			p = rel + "/" + name
		}
		e := &Entry{Dir: dir, Name: name, Path: p, Stat: st}
		err := fn(e)
		if err == SkipDir {
			continue
		} else if err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Dev != dev && st.Ino != firstFreeObjID {
			continue
		}
		sub, err := OpenDir(dir, name)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return err
		}
		err = walkDir(sub, p, st.Dev, depth+1, fn)
		sub.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// readNames reads the names in dir, sorted, leaving its offset at the end.
func readNames(dir *os.File) ([]string, error) {
	// A fresh descriptor: dir's offset may be in use by a caller.
	d, err := OpenDir(dir, ".")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", dir.Name(), err)
	}
	sort.Strings(names)
	return names, nil
}

// Usage sums the sizes of the regular files below root and counts them:
// a tree's apparent size, for listings and progress. It stops early, with
// what it has, at anything it cannot read.
func Usage(root *os.File) (size int64, files int) {
	Walk(root, func(e *Entry) error {
		if e.Stat.Mode&unix.S_IFMT == unix.S_IFREG {
			size += e.Stat.Size
			files++
		}
		return nil
	})
	return size, files
}

// UsagePath is Usage of the directory at path.
func UsagePath(path string) (int64, int) {
	f, err := OpenTree(path)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	return Usage(f)
}
