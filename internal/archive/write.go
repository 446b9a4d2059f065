package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const xattrPrefix = "SCHILY.xattr."

// Write writes the tree at root to w as a PAX tar stream with entries
// named ./PATH, as `tar -C root -c .` would, with numeric owners only.
// Sockets are left out: tar cannot hold them. count, if not nil, is told
// the bytes of file data written so far.
func Write(ctx context.Context, root string, w io.Writer, count func(int64)) error {
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{} // (dev, ino) → first name, for hard links
	var done int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		hdr, err := header(p, "./"+filepath.ToSlash(rel), links)
		if err != nil || hdr == nil {
			return err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.Copy(tw, f)
		if err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("%s changed size while being archived", p)
		}
		if done += n; count != nil {
			count(done)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// header describes p for tar, or returns nil for what tar cannot hold.
func header(p, name string, links map[[2]uint64]string) (*tar.Header, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	hdr := &tar.Header{
		Name:       name,
		Mode:       int64(st.Mode & 0o7777),
		Uid:        int(st.Uid),
		Gid:        int(st.Gid),
		ModTime:    time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Format:     tar.FormatPAX,
		PAXRecords: map[string]string{},
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		if name != "./." {
			hdr.Name += "/"
		} else {
			hdr.Name = "./"
		}
	case unix.S_IFREG:
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := links[key]; ok && st.Nlink > 1 {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			return hdr, nil // a hard link carries no data or attributes of its own
		}
		if st.Nlink > 1 {
			links[key] = name
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil, nil // sockets
	}
	if err := readXattrs(p, hdr.PAXRecords); err != nil {
		return nil, err
	}
	return hdr, nil
}

// readXattrs adds p's extended attributes (ACLs and security.capability
// among them) as SCHILY.xattr records, the form GNU tar and bsdtar read.
func readXattrs(p string, into map[string]string) error {
	size, err := unix.Llistxattr(p, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return fmt.Errorf("list xattrs of %s: %w", p, err)
	}
	if size == 0 {
		return nil
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(p, buf); err != nil {
		return fmt.Errorf("list xattrs of %s: %w", p, err)
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		n, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return fmt.Errorf("read xattr %s of %s: %w", name, p, err)
		}
		val := make([]byte, n)
		if n, err = unix.Lgetxattr(p, name, val); err != nil {
			return fmt.Errorf("read xattr %s of %s: %w", name, p, err)
		}
		into[xattrPrefix+name] = string(val[:n])
	}
	return nil
}
