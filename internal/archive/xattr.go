package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	xattrPrefix = "SCHILY.xattr."
	aclDefault  = "system.posix_acl_default"
)

// Options tune Write and Extract.
type Options struct {
	// Count, if set, is told the bytes of file data done so far.
	Count func(int64)
	// AllXattrs carries every extended attribute, not only those of
	// Portable: trusted.* and security.* other than file capabilities
	// belong to the host that set them (overlayfs, SELinux, IMA) and mean
	// something else, or grant something, on another.
	AllXattrs bool
	// Layer applies the archive as an OCI image layer over what the
	// directory already holds: whiteouts (.wh.NAME) delete what lower
	// layers made, an opaque marker (.wh..wh..opq) empties its directory
	// of it, and an entry replaces whatever is in its way.
	Layer bool
}

// Portable reports whether an extended attribute travels in an archive by
// default: user attributes, file capabilities and POSIX ACLs, what a
// root file system needs and GNU tar --xattrs --acls keeps.
func Portable(name string) bool {
	switch name {
	case "security.capability", "system.posix_acl_access", aclDefault:
		return true
	}
	return strings.HasPrefix(name, "user.")
}

func (o *Options) keep(name string) bool { return o.AllXattrs || Portable(name) }

func (o *Options) count(n int64) {
	if o.Count != nil {
		o.Count(n)
	}
}

// readXattrs adds the extended attributes of the inode behind fd that o
// keeps as SCHILY.xattr records, the form GNU tar and bsdtar read. An
// O_PATH descriptor (a device node's, a FIFO's) is read through its
// /proc/self/fd path, which names that very inode; others directly.
func readXattrs(fd int, opath bool, o *Options, into map[string]string) error {
	list := func(buf []byte) (int, error) { return unix.Flistxattr(fd, buf) }
	get := func(name string, buf []byte) (int, error) { return unix.Fgetxattr(fd, name, buf) }
	if opath {
		p := fdPath(fd)
		list = func(buf []byte) (int, error) { return unix.Listxattr(p, buf) }
		get = func(name string, buf []byte) (int, error) { return unix.Getxattr(p, name, buf) }
	}
	var small [1024]byte
	buf := small[:]
	size, err := list(buf)
	if errors.Is(err, unix.ERANGE) {
		if size, err = list(nil); err == nil {
			buf = make([]byte, size)
			size, err = list(buf)
		}
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil
	} else if err != nil {
		return fmt.Errorf("list xattrs: %w", err)
	}
	for _, name := range strings.Split(string(buf[:size]), "\x00") {
		if name == "" || !o.keep(name) {
			continue
		}
		n, err := get(name, nil)
		if err != nil {
			return fmt.Errorf("read xattr %s: %w", name, err)
		}
		val := make([]byte, n)
		if n, err = get(name, val); err != nil {
			return fmt.Errorf("read xattr %s: %w", name, err)
		}
		into[xattrPrefix+name] = string(val[:n])
		if rec := aclRecord(name); rec != "" {
			if text, err := aclText(val[:n]); err == nil {
				into[rec] = text
			}
		}
	}
	return nil
}

// xattrs are the attributes of an archive entry that Extract applies:
// names sorted, filtered by Options.
type xattrs []string // name, value, name, value...

func entryXattrs(hdr *tar.Header, o *Options) xattrs {
	var x xattrs
	var names []string
	values := map[string]string{}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, xattrPrefix); ok && o.keep(name) {
			names = append(names, name)
			values[name] = v
		}
	}
	// ACLs as GNU tar --acls writes them, where no binary form came.
	for _, name := range []string{aclAccess, aclDefault} {
		if _, ok := values[name]; ok {
			continue
		}
		if text, ok := hdr.PAXRecords[aclRecord(name)]; ok {
			if b, err := aclBinary(text); err == nil {
				names = append(names, name)
				values[name] = string(b)
			}
		}
	}
	sort.Strings(names)
	for _, n := range names {
		x = append(x, n, values[n])
	}
	return x
}

// get returns the value of attribute name in x, or "".
func (x xattrs) get(name string) string {
	for i := 0; i < len(x); i += 2 {
		if x[i] == name {
			return x[i+1]
		}
	}
	return ""
}

// without returns x without attribute name.
func (x xattrs) without(name string) xattrs {
	for i := 0; i < len(x); i += 2 {
		if x[i] == name {
			return append(x[:i:i], x[i+2:]...)
		}
	}
	return x
}

// set applies x to the inode at path (a /proc/self/fd path).
func (x xattrs) set(path string) error {
	for i := 0; i < len(x); i += 2 {
		if err := unix.Setxattr(path, x[i], []byte(x[i+1]), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", x[i], err)
		}
	}
	return nil
}

// fset applies x to the open file fd.
func (x xattrs) fset(fd int) error {
	for i := 0; i < len(x); i += 2 {
		if err := unix.Fsetxattr(fd, x[i], []byte(x[i+1]), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", x[i], err)
		}
	}
	return nil
}

// fdPath names the inode behind descriptor fd: system calls that take
// only paths (getxattr on an O_PATH descriptor, say) follow it to exactly
// that inode, never a symlink an image has put in its place.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
