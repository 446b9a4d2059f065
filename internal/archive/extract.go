package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UnsafeError is an archive entry that would reach outside the target or
// create what an image may not hold there.
type UnsafeError struct {
	Name, Reason string
}

func (e *UnsafeError) Error() string { return fmt.Sprintf("refusing %q: %s", e.Name, e.Reason) }

// clean turns an entry name into a path relative to the target, refusing
// absolute paths and any .. component.
func clean(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", &UnsafeError{name, "absolute path"}
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", &UnsafeError{name, "path leaves the image (..)"}
		}
	}
	p := path.Clean(name)
	if p == "" || strings.ContainsRune(p, 0) {
		return "", &UnsafeError{name, "empty or NUL in path"}
	}
	return p, nil
}

// later holds what is applied once all content is in place: ownership
// before modes (chown clears set-id bits), attributes after ownership
// (chown clears security.capability), times last.
type later struct {
	name string
	hdr  *tar.Header
}

// parentDir keeps the last parent directory opened (through the root, so
// inside it) for the entries that follow in it: tar streams list a
// directory's entries together, and opening each entry's path afresh walks
// every component of it.
type parentDir struct {
	root *os.Root
	name string
	f    *os.File
}

// fd returns a descriptor for directory dir below the root.
func (p *parentDir) fd(dir string) (int, error) {
	if p.f == nil || p.name != dir {
		p.close()
		f, err := p.root.Open(dir)
		if err != nil {
			return -1, err
		}
		p.f, p.name = f, dir
	}
	return int(p.f.Fd()), nil
}

func (p *parentDir) close() {
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
}

// Extract unpacks the tar stream r into dir, which must be an empty
// directory. Everything goes through an os.Root on dir, so no entry,
// symlink or hard link can make it write outside; device nodes are only
// accepted below dev/. On error dir is left half-filled for the caller to
// remove.
func Extract(ctx context.Context, r io.Reader, dir string, count func(int64)) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	parent := &parentDir{root: root}
	defer parent.close()
	w := newWriters(root)
	defer w.close()
	var (
		meta []later
		done int64
		buf  = make([]byte, 1<<16)
		dirs = map[string]bool{".": true} // made already: no MkdirAll per entry
	)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := w.failed(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		name, err := clean(hdr.Name)
		if err != nil {
			return err
		}
		if parent := path.Dir(name); name != "." && !dirs[parent] {
			if err := root.MkdirAll(parent, 0o755); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			dirs[parent] = true
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name != "." {
				if err := root.Mkdir(name, 0o700); errors.Is(err, os.ErrExist) {
					// Only a real directory may be described twice: over a
					// symlink, the attributes would land on its target.
					if fi, lerr := root.Lstat(name); lerr != nil || !fi.IsDir() {
						return &UnsafeError{hdr.Name, "directory entry over an existing non-directory"}
					}
				} else if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				dirs[name] = true
			}
		case tar.TypeReg, tar.TypeRegA:
			// A file gets all its attributes through its descriptor as
			// soon as its data is written: nothing can change it later.
			// Small ones are written on other CPUs meanwhile.
			n := hdr.Size
			if n <= smallFile {
				err = w.add(name, hdr, tr)
			} else {
				n, err = writeFile(parent, name, tr, hdr, buf)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if done += n; count != nil {
				count(done)
			}
			continue
		case tar.TypeLink:
			target, err := clean(hdr.Linkname)
			if err != nil {
				return err
			}
			if err := w.wait(); err != nil { // the target may be queued
				return err
			}
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("hard link %s to %s: %w", name, target, err)
			}
			continue // shares the target's attributes
		case tar.TypeSymlink:
			// The target is only data; os.Root refuses to follow it out
			// when later entries are written through it.
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			if err := mknod(root, name, hdr); err != nil {
				return err
			}
		case tar.TypeXGlobalHeader:
			continue
		default:
			return &UnsafeError{hdr.Name, fmt.Sprintf("unsupported entry type %q", hdr.Typeflag)}
		}
		meta = append(meta, later{name, hdr})
	}
	if err := w.wait(); err != nil {
		return err
	}
	return applyMeta(root, meta)
}

// writeFile writes a regular file, keeping it sparse, then applies owner,
// mode, extended attributes and times through its descriptor, in the
// order that keeps them: chown clears set-id bits and capabilities.
func writeFile(parent *parentDir, name string, r io.Reader, hdr *tar.Header, buf []byte) (int64, error) {
	pfd, err := parent.fd(path.Dir(name))
	if err != nil {
		return 0, err
	}
	// One component below a directory inside the root; O_EXCL also
	// refuses an existing symlink there.
	fd, err := unix.Openat(pfd, path.Base(name), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	n, err := writeSparse(f, r, hdr.Size, buf)
	if err != nil {
		return n, err
	}
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return n, fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
		return n, fmt.Errorf("chmod: %w", err)
	}
	if err := fsetxattrs(fd, hdr); err != nil {
		return n, err
	}
	ts := [2]unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	// futimens(fd, ts): utimensat with a NULL path.
	if _, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); e != 0 {
		return n, fmt.Errorf("set times: %w", e)
	}
	return n, nil
}

// writeSparse writes size bytes from r to f, seeking over blocks of zeros
// so that sparse files stay sparse.
func writeSparse(f *os.File, r io.Reader, size int64, buf []byte) (int64, error) {
	var off int64
	hole := false // the file ends in a hole: only a truncate gives it its size
	for off < size {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-off)])
		if err != nil {
			return off, fmt.Errorf("archive ends inside the file: %w", err)
		}
		chunk := buf[:n]
		if hole = allZero(chunk); hole {
			if _, err := f.Seek(int64(n), io.SeekCurrent); err != nil {
				return off, err
			}
		} else if _, err := f.Write(chunk); err != nil {
			return off, err
		}
		off += int64(n)
	}
	if hole {
		return off, f.Truncate(size)
	}
	return off, nil
}

var zeros = make([]byte, 1<<16)

func allZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }

func mknod(root *os.Root, name string, hdr *tar.Header) error {
	mode := uint32(unix.S_IFIFO)
	if hdr.Typeflag != tar.TypeFifo {
		if name != "dev" && !strings.HasPrefix(name, "dev/") {
			return &UnsafeError{hdr.Name, "device node outside /dev"}
		}
		mode = unix.S_IFCHR
		if hdr.Typeflag == tar.TypeBlock {
			mode = unix.S_IFBLK
		}
	}
	parent, err := root.Open(path.Dir(name))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer parent.Close()
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	if err := unix.Mknodat(int(parent.Fd()), path.Base(name), mode|0o600, int(dev)); err != nil {
		return fmt.Errorf("mknod %s: %w", name, err)
	}
	return nil
}

// applyMeta gives directories, symlinks, device nodes and fifos their
// owner, mode, attributes and times once everything is extracted, deepest
// first so that nothing touches a directory after its times are set. It
// works relative to each parent's descriptor, kept while siblings follow.
func applyMeta(root *os.Root, meta []later) error {
	sort.SliceStable(meta, func(i, j int) bool { return strings.Count(meta[i].name, "/") > strings.Count(meta[j].name, "/") })
	parent := &parentDir{root: root}
	defer parent.close()
	for _, m := range meta {
		base := path.Base(m.name)
		pfd, err := parent.fd(path.Dir(m.name))
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		if err := unix.Fchownat(pfd, base, m.hdr.Uid, m.hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %s: %w", m.name, err)
		}
		if m.hdr.Typeflag != tar.TypeSymlink { // symlinks have no mode of their own
			if err := unix.Fchmodat(pfd, base, uint32(m.hdr.Mode&0o7777), 0); err != nil {
				return fmt.Errorf("chmod %s: %w", m.name, err)
			}
		}
		if err := setXattrs(root, m); err != nil {
			return err
		}
		ts := []unix.Timespec{unix.NsecToTimespec(m.hdr.ModTime.UnixNano()), unix.NsecToTimespec(m.hdr.ModTime.UnixNano())}
		if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times of %s: %w", m.name, err)
		}
	}
	return nil
}

// setXattrs applies a directory's extended attributes (device nodes and
// fifos are not opened; files get theirs in writeFile).
func setXattrs(root *os.Root, m later) error {
	if m.hdr.Typeflag != tar.TypeDir || !hasXattrs(m.hdr) {
		return nil
	}
	f, err := root.OpenFile(m.name, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", m.name, err)
	}
	defer f.Close()
	if err := fsetxattrs(int(f.Fd()), m.hdr); err != nil {
		return fmt.Errorf("%s: %w", m.name, err)
	}
	return nil
}

func hasXattrs(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPrefix) {
			return true
		}
	}
	return false
}

func fsetxattrs(fd int, hdr *tar.Header) error {
	var names []string
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPrefix) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		if err := unix.Fsetxattr(fd, strings.TrimPrefix(k, xattrPrefix), []byte(hdr.PAXRecords[k]), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", strings.TrimPrefix(k, xattrPrefix), err)
		}
	}
	return nil
}
