// Package image is berth's trust boundary. Every path that berthd opens
// inside the machine pool or inside an image goes through it, and it opens
// them one component at a time relative to a directory it already holds,
// never following a symlink: an image's symlinks point into the host when
// seen from outside, and a running machine can swap a directory for one at
// any moment. What berth knows about an image (template or machine, where
// it came from, what it was built from) is kept in records outside every
// image (see Store), so that nothing an image contains can forge it.
package image

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrSymlink is returned when a path inside an image passes through, or
// ends in, a symlink (or anything else than what the call needs).
var ErrSymlink = errors.New("refusing to follow a symlink inside an image")

// PathError names the image path an operation refused or failed on.
type PathError struct {
	Op, Path string
	Err      error
}

func (e *PathError) Error() string { return e.Op + " " + e.Path + ": " + e.Err.Error() }
func (e *PathError) Unwrap() error { return e.Err }

// split turns a relative path into its components, refusing absolute
// paths, "..", and empty names.
func split(rel string) ([]string, error) {
	if rel == "" || rel == "." {
		return nil, nil
	}
	if strings.HasPrefix(rel, "/") {
		return nil, fmt.Errorf("absolute path %q", rel)
	}
	var out []string
	for _, c := range strings.Split(rel, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return nil, fmt.Errorf("path %q leaves its directory", rel)
		}
		out = append(out, c)
	}
	return out, nil
}

// openat opens name, one component, below dirfd without following it.
func openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// nofollow turns what the kernel says when O_NOFOLLOW meets a symlink
// into ErrSymlink.
func nofollow(err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("%w (%v)", ErrSymlink, err)
	}
	return err
}

// OpenAt opens rel below the directory dirfd with flags (O_RDONLY,
// O_DIRECTORY, O_PATH, O_CREAT|O_EXCL, …), walking it one component at a
// time: every directory on the way and the last component are opened
// with O_NOFOLLOW, so the result is beneath dirfd whatever the image holds.
func OpenAt(dirfd int, rel string, flags int, mode uint32) (int, error) {
	parts, err := split(rel)
	if err != nil {
		return -1, err
	}
	if len(parts) == 0 {
		return openat(dirfd, ".", flags, mode)
	}
	cur := dirfd
	for i, c := range parts {
		last := i == len(parts)-1
		fl := unix.O_PATH | unix.O_DIRECTORY
		if last {
			fl = flags
		}
		fd, err := openat(cur, c, fl, mode)
		if cur != dirfd {
			unix.Close(cur)
		}
		if err != nil {
			if !last || flags&unix.O_DIRECTORY != 0 {
				err = nofollow(err)
			} else if errors.Is(err, unix.ELOOP) {
				err = fmt.Errorf("%w (%v)", ErrSymlink, err)
			}
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}

// OpenDir opens the directory rel below dir (a directory file).
func OpenDir(dir *os.File, rel string) (*os.File, error) {
	fd, err := OpenAt(int(dir.Fd()), rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, &PathError{"open", join(dir.Name(), rel), err}
	}
	return os.NewFile(uintptr(fd), join(dir.Name(), rel)), nil
}

// Open opens the directory path, the start of every walk into the pool:
// the pool's own path is the admin's (berth.toml), so it may contain
// symlinks; only what lies below it is refused them.
func Open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// OpenTree opens the tree (image, snapshot, base) at path without
// following a symlink in its last component. Every directory above it is
// berth's own (the pool, its state directory), so only the tree itself is
// the image's.
func OpenTree(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = nofollow(pe.Err)
		}
		return nil, &PathError{"open", path, err}
	}
	return f, nil
}

// Parent opens the directory that holds rel below dir and returns it with
// rel's last component: the pair every *at call takes.
func Parent(dir *os.File, rel string) (*os.File, string, error) {
	parts, err := split(rel)
	if err != nil || len(parts) == 0 {
		return nil, "", &PathError{"open", join(dir.Name(), rel), fmt.Errorf("no last component in %q", rel)}
	}
	p, err := OpenDir(dir, strings.Join(parts[:len(parts)-1], "/"))
	if err != nil {
		return nil, "", err
	}
	return p, parts[len(parts)-1], nil
}

func join(dir, rel string) string {
	if rel == "" || rel == "." {
		return dir
	}
	return strings.TrimSuffix(dir, "/") + "/" + rel
}
