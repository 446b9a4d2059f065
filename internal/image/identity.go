package image

import (
	"errors"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// ResetIdentity gives the tree at root (a new clone or template) no
// identity of its own: an empty etc/machine-id, which systemd fills on
// first boot, and no etc/hostname, so that systemd-nspawn's machine name
// is used. Both are replaced, never written through: a symlink there
// (or an etc that is one) points into the host.
func ResetIdentity(root *os.File) error {
	etc, err := OpenDir(root, "etc")
	if errors.Is(err, unix.ENOENT) {
		return nil // nothing to reset, as in a bare test tree
	}
	if err != nil {
		return err
	}
	defer etc.Close()
	fd := int(etc.Fd())
	for _, name := range []string{"machine-id", "hostname"} {
		if err := unix.Unlinkat(fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return &PathError{"remove", join(etc.Name(), name), err}
		}
	}
	id, err := openat(fd, "machine-id", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o444)
	if err != nil {
		return &PathError{"create", join(etc.Name(), "machine-id"), err}
	}
	// O_CREAT's mode passes through the umask; the file must be 0444.
	err = unix.Fchmod(id, 0o444)
	unix.Close(id)
	if err != nil {
		return &PathError{"chmod", join(etc.Name(), "machine-id"), err}
	}
	return nil
}

// HasIdentity reports whether ResetIdentity would change the tree at root:
// a machine-id with content (or not a plain empty 0444 file), a hostname,
// or an etc it cannot look into safely. A template berth finished has
// none, so its clones need no writes at all.
func HasIdentity(root *os.File) bool {
	etc, err := OpenDir(root, "etc")
	if errors.Is(err, unix.ENOENT) {
		return false
	}
	if err != nil {
		return true
	}
	defer etc.Close()
	var st unix.Stat_t
	if err := unix.Fstatat(int(etc.Fd()), "hostname", &st, unix.AT_SYMLINK_NOFOLLOW); !errors.Is(err, unix.ENOENT) {
		return true
	}
	err = unix.Fstatat(int(etc.Fd()), "machine-id", &st, unix.AT_SYMLINK_NOFOLLOW)
	return err != nil || st.Mode != unix.S_IFREG|0o444 || st.Size != 0
}

// RemoveMatching removes the files in one directory of root whose names
// match the last component of glob ("var/lib/apt/lists/*_*"). A missing
// directory has nothing to remove.
func RemoveMatching(root *os.File, glob string) error {
	dir, pattern := path.Split(glob)
	d, err := OpenDir(root, dir)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := readNames(d)
	if err != nil {
		return err
	}
	for _, n := range names {
		if ok, _ := path.Match(pattern, n); !ok {
			continue
		}
		if err := unix.Unlinkat(int(d.Fd()), n, 0); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EISDIR) {
			return &PathError{"remove", join(d.Name(), n), err}
		}
	}
	return nil
}
