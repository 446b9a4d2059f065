package archive

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/image"
)

// Write writes the tree below root (an open directory) to w as a PAX tar
// stream with entries named ./PATH, as `tar -C root -c .` would, with
// numeric owners only. It walks by descriptor (image.Walk) and opens every
// file relative to its directory without following symlinks, so a tree
// that changes meanwhile cannot make it read outside. Sockets are left
// out: tar cannot hold them.
func Write(ctx context.Context, root *os.File, w io.Writer, o Options) error {
	out := newTarOut(w, &o)
	err := image.Walk(root, func(e *image.Entry) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return out.add(ctx, e)
	})
	if err != nil {
		return err
	}
	return out.close()
}

// tarOut is a tar stream being written from a walk.
type tarOut struct {
	bw    *bufio.Writer
	tw    *tar.Writer
	links map[[2]uint64]string // (dev, ino) → first name, for hard links
	done  int64
	o     *Options
}

func newTarOut(w io.Writer, o *Options) *tarOut {
	// archive/tar writes every 512-byte block on its own; batched, a
	// header costs the compressor's pipe one write in hundreds, as GNU
	// tar's records do.
	bw := bufio.NewWriterSize(w, 256<<10)
	return &tarOut{bw: bw, tw: tar.NewWriter(bw), links: map[[2]uint64]string{}, o: o}
}

// add writes entry e, counting its data.
func (t *tarOut) add(ctx context.Context, e *image.Entry) error {
	n, err := writeEntry(ctx, t.tw, e, t.links, t.o)
	if err != nil {
		return fmt.Errorf("%s: %w", e.Path, err)
	}
	if n > 0 {
		t.done += n
		t.o.count(t.done)
	}
	return nil
}

// close ends the stream.
func (t *tarOut) close() error {
	if err := t.tw.Close(); err != nil {
		return err
	}
	return t.bw.Flush()
}

// writeEntry writes one entry and returns the bytes of its data.
func writeEntry(ctx context.Context, tw *tar.Writer, e *image.Entry, links map[[2]uint64]string, o *Options) (int64, error) {
	st := &e.Stat
	name := "./" + e.Path
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Format:  tar.FormatPAX,
	}
	flags := unix.O_PATH
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		if e.Path == "." {
			hdr.Name = "./"
		}
		flags = unix.O_RDONLY | unix.O_DIRECTORY
	case unix.S_IFREG:
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := links[key]; ok && st.Nlink > 1 {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			return 0, tw.WriteHeader(hdr) // no data or attributes of its own
		}
		if st.Nlink > 1 {
			links[key] = name
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
		flags = unix.O_RDONLY | unix.O_NONBLOCK
	case unix.S_IFLNK:
		// Symlinks carry no attribute that travels (the kernel keeps
		// user.* and ACLs off them).
		target, err := readlinkat(int(e.Dir.Fd()), e.Name)
		if err != nil {
			return 0, err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		return 0, tw.WriteHeader(hdr)
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return 0, nil // sockets
	}
	fd, err := image.OpenAt(int(e.Dir.Fd()), e.Name, flags, 0)
	if err != nil {
		return 0, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		return 0, err
	}
	if now.Ino != st.Ino || now.Dev != st.Dev {
		return 0, errors.New("replaced while being archived")
	}
	pax := map[string]string{}
	if err := readXattrs(fd, flags == unix.O_PATH, o, pax); err != nil {
		return 0, err
	}
	if _, ok := pax[aclRecord(aclAccess)]; !ok && pax[aclRecord(aclDefault)] != "" {
		// As GNU tar: a default ACL comes with the access ACL the mode
		// makes, which libarchive needs to restore the mode at all.
		pax[aclRecord(aclAccess)] = modeACL(st.Mode)
	}
	if len(pax) > 0 {
		hdr.PAXRecords = pax
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return 0, err
	}
	if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
		return 0, nil
	}
	n, err := copyData(ctx, tw, f)
	if err != nil {
		return n, err
	}
	if n != hdr.Size {
		return n, errors.New("changed size while being archived")
	}
	return n, nil
}

// copyData copies a file's data, checking ctx between chunks so that a
// large file does not hold up cancellation.
func copyData(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, err := r.Read(*buf)
		if m > 0 {
			if _, werr := w.Write((*buf)[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
		}
		if err == io.EOF {
			return n, nil
		} else if err != nil {
			return n, err
		}
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

func readlinkat(dir int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dir, name, buf)
		if err != nil {
			return "", fmt.Errorf("readlink: %w", err)
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
