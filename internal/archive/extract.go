package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/image"
)

// UnsafeError is an archive entry that would reach outside the target or
// create what an image may not hold there.
type UnsafeError struct {
	Name, Reason string
}

func (e *UnsafeError) Error() string { return fmt.Sprintf("refusing %q: %s", e.Name, e.Reason) }

// unsafeEntry names an entry in an UnsafeError, shortened: a PAX path
// may be a megabyte long, and the error goes to the caller and the
// journal.
func unsafeEntry(name, reason string) *UnsafeError {
	if len(name) > 256 {
		name = name[:256] + "…"
	}
	return &UnsafeError{name, reason}
}

// clean turns an entry name into a path relative to the target, refusing
// absolute paths and any .. component.
func clean(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", unsafeEntry(name, "absolute path")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", unsafeEntry(name, "path leaves the image (..)")
		}
	}
	p := path.Clean(name)
	if p == "" || strings.ContainsRune(p, 0) {
		return "", unsafeEntry(name, "empty or NUL in path")
	}
	if strings.Count(p, "/") >= image.MaxDepth {
		return "", unsafeEntry(name, fmt.Sprintf("deeper than %d directories", image.MaxDepth))
	}
	return p, nil
}

// dirMeta is what Extract applies to a directory once everything is in
// place: a mode that could keep it from being written into (for callers
// without root's override), and times, which every entry made in it
// changes. Owner and other attributes are set at once; nothing later
// disturbs them, so no header is kept.
type dirMeta struct {
	name  string
	mode  uint32
	mtime int64
	// defaultACL waits too: set at once, every entry made below would
	// inherit it on top of its own.
	defaultACL string
}

// maxDirMeta bounds what Extract keeps per archive about directories,
// whatever the archive: a root file system has some 10,000 directories
// (a few hundred KiB of this), so 64 MiB is far beyond any real one.
const maxDirMeta = 64 << 20

// parentDir keeps the last parent directory opened (through the root, so
// inside it) for the entries that follow in it: tar streams list a
// directory's entries together, and opening each entry's path afresh walks
// every component of it.
type parentDir struct {
	root *os.Root
	// removed counts the trees a layer removed (shared by Extract's
	// goroutines): a cached descriptor may then be of a removed directory
	// whose name a new one took, so the cache starts again.
	removed *atomic.Uint64
	seen    uint64
	dirs    map[string]*os.File
}

// maxOpenDirs bounds the descriptors one parentDir keeps.
const maxOpenDirs = 64

func newParentDir(root *os.Root, removed *atomic.Uint64) *parentDir {
	return &parentDir{root: root, removed: removed, dirs: map[string]*os.File{}}
}

// fd returns a descriptor for directory dir below the root. A directory
// whose parent is open is opened below it, one component with
// O_NOFOLLOW, as os.Root does at each step; others through the root.
func (p *parentDir) fd(dir string) (int, error) {
	if n := p.removed.Load(); n != p.seen {
		p.close()
		p.seen = n
	}
	if f, ok := p.dirs[dir]; ok {
		return int(f.Fd()), nil
	}
	if len(p.dirs) >= maxOpenDirs {
		p.close()
	}
	var f *os.File
	if up, ok := p.dirs[path.Dir(dir)]; ok && dir != "." {
		// A symlink there (ELOOP) is left to the root, which follows it
		// if it stays inside.
		if fd, err := unix.Openat(int(up.Fd()), path.Base(dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
			f = os.NewFile(uintptr(fd), dir)
		}
	}
	if f == nil {
		var err error
		if f, err = p.root.Open(dir); err != nil {
			return -1, err
		}
	}
	p.dirs[dir] = f
	return int(f.Fd()), nil
}

func (p *parentDir) close() {
	for name, f := range p.dirs {
		f.Close()
		delete(p.dirs, name)
	}
}

// endReader tells a tar stream that ends with its end-of-archive blocks
// from one cut short at an entry boundary, which archive/tar takes for the
// same io.EOF: the first reads every byte it needs and stops; the second
// asks for more after the end.
type endReader struct {
	r     io.Reader
	short bool
}

func (e *endReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if n == 0 && err == io.EOF {
		e.short = true
	}
	return n, err
}

// ErrNoEnd is a tar stream without its end-of-archive blocks: cut short,
// or empty.
var ErrNoEnd = errors.New("the archive ends without its end-of-archive blocks (cut short?)")

// Extract unpacks the tar stream r into dir, which must be an empty
// directory. Everything goes through an os.Root on dir, so no entry,
// symlink or hard link can make it write outside. Device nodes are made
// wherever the archive has them, as machinectl import-tar does: the pool
// is root's alone (0700), so they reach nothing a user could not already.
// Memory stays bounded whatever the headers hold; ctx is checked inside
// large files too. On error dir is left half-filled for the caller to
// remove.
func Extract(ctx context.Context, r io.Reader, dir string, o Options) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	end := &endReader{r: r}
	tr := tar.NewReader(end)
	removed := new(atomic.Uint64)
	parent := newParentDir(root, removed)
	defer parent.close()
	w := newWriters(root, &o, removed)
	defer w.close()
	var lay *layer
	if o.Layer {
		if lay, err = newLayer(root, removed); err != nil {
			return err
		}
	}
	var (
		meta     []dirMeta
		metaSize int
		done     int64
		buf      = make([]byte, 1<<16)
		dirs     = map[string]bool{".": true} // made already: no MkdirAll per entry
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
			if end.short {
				return ErrNoEnd
			}
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
			metaSize += len(parent) + 16
		}
		if lay != nil {
			done, err := lay.apply(root, name, hdr, w, dirs)
			if err != nil {
				return err
			}
			if done {
				continue
			}
			if metaSize += len(name) + 16; metaSize > maxDirMeta {
				return unsafeEntry(hdr.Name, fmt.Sprintf("more entries than berth keeps track of in a layer (%d MiB of names)", maxDirMeta>>20))
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name != "." {
				pfd, err := parent.fd(path.Dir(name))
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				if err := unix.Mkdirat(pfd, path.Base(name), 0o700); errors.Is(err, unix.EEXIST) {
					// Only a real directory may be described twice: over a
					// symlink, the attributes would land on its target.
					if fi, lerr := root.Lstat(name); lerr != nil || !fi.IsDir() {
						return unsafeEntry(hdr.Name, "directory entry over an existing non-directory")
					}
				} else if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				dirs[name] = true
			}
			x := entryXattrs(hdr, &o)
			if err := setDir(parent, name, hdr, x.without(aclDefault)); err != nil {
				return err
			}
			m := dirMeta{name, uint32(hdr.Mode & 0o7777), hdr.ModTime.UnixNano(), x.get(aclDefault)}
			meta = append(meta, m)
			if metaSize += 2*len(name) + len(m.defaultACL) + 64; metaSize > maxDirMeta {
				return unsafeEntry(hdr.Name, fmt.Sprintf("more directories than berth keeps track of (%d MiB of names)", maxDirMeta>>20))
			}
		case tar.TypeReg, tar.TypeRegA:
			// A file gets all its attributes through its descriptor as
			// soon as its data is written: nothing can change it later.
			// Small ones are written on other CPUs meanwhile.
			n := hdr.Size
			if n <= smallFile {
				err = w.add(name, hdr, tr)
			} else {
				n, err = writeFile(ctx, parent, name, tr, hdr, &o, buf)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if done += n; n > 0 {
				o.count(done)
			}
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
			// shares the target's attributes
		case tar.TypeSymlink:
			// The target is only data; os.Root refuses to follow it out
			// when later entries are written through it.
			pfd, err := parent.fd(path.Dir(name))
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if err := unix.Symlinkat(hdr.Linkname, pfd, path.Base(name)); err != nil {
				return fmt.Errorf("%s: %w", name, &os.LinkError{Op: "symlink", Old: hdr.Linkname, New: name, Err: err})
			}
			if err := setSymlink(parent, name, hdr); err != nil {
				return err
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			if err := mknod(parent, name, hdr, &o); err != nil {
				return err
			}
		case tar.TypeXGlobalHeader:
		default:
			return unsafeEntry(hdr.Name, fmt.Sprintf("unsupported entry type %q", hdr.Typeflag))
		}
	}
	if err := w.wait(); err != nil {
		return err
	}
	return applyDirs(parent, meta)
}

// writeFile writes a regular file, keeping it sparse, then applies owner,
// mode, extended attributes and times through its descriptor, in the
// order that keeps them: chown clears set-id bits and capabilities.
func writeFile(ctx context.Context, parent *parentDir, name string, r io.Reader, hdr *tar.Header, o *Options, buf []byte) (int64, error) {
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
	n, err := writeSparse(ctx, f, r, hdr.Size, buf)
	if err != nil {
		return n, err
	}
	return n, setInode(fd, false, hdr, o)
}

// setInode gives the inode behind fd the owner, mode, attributes and
// times of hdr, in the order that keeps them: chown clears set-id bits
// and file capabilities. An O_PATH descriptor (opath: a device node's, a
// FIFO's) takes mode and attributes through its /proc/self/fd path; an
// open file takes them directly, which costs no path walk.
func setInode(fd int, opath bool, hdr *tar.Header, o *Options) error {
	// A new inode is already ours (directories get their set-gid bit
	// only at the end), which most of a root file system is meant to be.
	if hdr.Uid != euid || hdr.Gid != egid {
		if err := unix.Fchownat(fd, "", hdr.Uid, hdr.Gid, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	mode := uint32(hdr.Mode & 0o7777)
	x := entryXattrs(hdr, o)
	if opath {
		p := fdPath(fd)
		if err := unix.Chmod(p, mode); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
		if err := x.set(p); err != nil {
			return err
		}
	} else {
		if err := unix.Fchmod(fd, mode); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
		if err := x.fset(fd); err != nil {
			return err
		}
	}
	return setTimes(fd, hdr.ModTime.UnixNano())
}

var euid, egid = os.Geteuid(), os.Getegid()

// setTimes sets the access and modification times of the inode behind fd:
// futimens (utimensat with a NULL path) for an open file, its
// /proc/self/fd path for an O_PATH descriptor, which futimens refuses.
func setTimes(fd int, ns int64) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e == unix.EBADF {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, fdPath(fd), ts[:], 0); err != nil {
			return fmt.Errorf("set times: %w", err)
		}
		return nil
	}
	if e != 0 {
		return fmt.Errorf("set times: %w", e)
	}
	return nil
}

// writeSparse writes size bytes from r to f, seeking over blocks of zeros
// so that sparse files stay sparse. Data already in memory (a small
// file's, from the writers) is written from where it is.
func writeSparse(ctx context.Context, f *os.File, r io.Reader, size int64, buf []byte) (int64, error) {
	if m, ok := r.(*inMemory); ok {
		hole, err := sparseChunk(f, m.data)
		if err == nil && hole {
			err = f.Truncate(size)
		}
		return int64(len(m.data)), err
	}
	var off int64
	hole := false // the file ends in a hole: only a truncate gives it its size
	for i := 0; off < size; i++ {
		// archive/tar hands out a sparse file's holes as zeros: a tiny
		// archive can describe a petabyte of them.
		if i%64 == 63 {
			if err := ctx.Err(); err != nil {
				return off, err
			}
		}
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-off)])
		if err != nil {
			return off, fmt.Errorf("archive ends inside the file: %w", err)
		}
		if hole, err = sparseChunk(f, buf[:n]); err != nil {
			return off, err
		}
		off += int64(n)
	}
	if hole {
		return off, f.Truncate(size)
	}
	return off, nil
}

// inMemory is a small file's data, read whole before it is written;
// writeSparse writes it from where it is rather than reading it.
type inMemory struct{ data []byte }

func (m *inMemory) Read(p []byte) (int, error) {
	if len(m.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, m.data)
	m.data = m.data[n:]
	return n, nil
}

// sparseChunk writes chunk at f's offset: over each block of zeros it
// seeks, and each run of other blocks goes in one write. It reports
// whether the chunk ends in a hole.
func sparseChunk(f *os.File, chunk []byte) (hole bool, err error) {
	for len(chunk) > 0 {
		run := 0
		for run < len(chunk) {
			n := min(len(chunk)-run, len(zeros))
			if allZero(chunk[run : run+n]) {
				break
			}
			run += n
		}
		if run > 0 {
			if _, err := f.Write(chunk[:run]); err != nil {
				return false, err
			}
			chunk, hole = chunk[run:], false
			continue
		}
		n := min(len(chunk), len(zeros))
		if _, err := f.Seek(int64(n), io.SeekCurrent); err != nil {
			return false, err
		}
		chunk, hole = chunk[n:], true
	}
	return hole, nil
}

var zeros = make([]byte, 1<<16)

func allZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }

// mknod makes a device node or FIFO and gives it its attributes.
func mknod(parent *parentDir, name string, hdr *tar.Header, o *Options) error {
	mode := uint32(unix.S_IFIFO)
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode = unix.S_IFCHR
	case tar.TypeBlock:
		mode = unix.S_IFBLK
	}
	pfd, err := parent.fd(path.Dir(name))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	base := path.Base(name)
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	if err := unix.Mknodat(pfd, base, mode|0o600, int(dev)); err != nil {
		return fmt.Errorf("mknod %s: %w", name, err)
	}
	fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer unix.Close(fd)
	if err := setInode(fd, true, hdr, o); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// setSymlink gives a symlink its owner and times; it has no mode, and
// the kernel keeps the attributes that travel off it.
func setSymlink(parent *parentDir, name string, hdr *tar.Header) error {
	pfd, err := parent.fd(path.Dir(name))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	base := path.Base(name)
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %s: %w", name, err)
	}
	ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", name, err)
	}
	return nil
}

// setDir gives a directory its owner and attributes as soon as it is
// made; its mode and times wait for applyDirs.
func setDir(parent *parentDir, name string, hdr *tar.Header, x xattrs) error {
	if len(x) == 0 && hdr.Uid == euid && hdr.Gid == egid {
		return nil // as made
	}
	fd, err := parent.fd(name)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown %s: %w", name, err)
	}
	if err := x.set(fdPath(fd)); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// applyDirs gives directories their modes and times once everything is
// extracted, deepest first so that nothing touches a directory after its
// times are set.
func applyDirs(parent *parentDir, meta []dirMeta) error {
	sort.SliceStable(meta, func(i, j int) bool { return strings.Count(meta[i].name, "/") > strings.Count(meta[j].name, "/") })
	for _, m := range meta {
		pfd, err := parent.fd(path.Dir(m.name))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			continue // a later entry of a layer removed or replaced it
		}
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		fd, err := unix.Openat(pfd, path.Base(m.name), unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if m.name == "." {
			fd, err = unix.Openat(pfd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		}
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue // a later entry of a layer removed or replaced it
		}
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		err = unix.Chmod(fdPath(fd), m.mode)
		if err == nil && m.defaultACL != "" {
			err = xattrs{aclDefault, m.defaultACL}.set(fdPath(fd))
		}
		if err == nil {
			err = setTimes(fd, m.mtime)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	return nil
}
