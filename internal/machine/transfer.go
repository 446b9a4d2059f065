package machine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/internal/image"
)

// Transfer errors.
var (
	ErrArchiveExists = errors.New("archive exists")
	ErrBadArchive    = errors.New("bad archive")
)

// Export writes image name to the archive file dst, a path of berthd's
// host named by root: under a temporary name in dst's directory, renamed
// over dst when complete. An existing dst (a symlink included, which is
// replaced, never followed) is kept unless force.
func (m *Manager) Export(ctx context.Context, name, dst string, format archive.Format, force, allXattrs bool, progress func(done, total int64)) (size int64, err error) {
	if !filepath.IsAbs(dst) {
		return 0, fmt.Errorf("%s: not an absolute path", dst)
	}
	if _, err := os.Lstat(dst); err == nil && !force {
		return 0, fmt.Errorf("%s: %w", dst, ErrArchiveExists)
	}
	// The temporary name is noted before the file exists, so that a
	// berthd killed at any moment leaves nothing Recover does not find.
	tmp := filepath.Join(filepath.Dir(dst), image.TempName(".#berth-", filepath.Base(dst)))
	forget := m.remember(tmp)
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
		forget()
	}()
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return 0, fmt.Errorf("export to %s: %w", dst, err)
	}
	size, err = m.ExportTo(ctx, name, f, format, allXattrs, progress)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("export to %s: %w", dst, cerr)
	}
	if err != nil {
		return 0, err
	}
	flags := uint(unix.RENAME_NOREPLACE)
	if force {
		flags = 0
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, flags); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return 0, fmt.Errorf("%s: %w", dst, ErrArchiveExists)
		}
		return 0, fmt.Errorf("export to %s: %w", dst, err)
	}
	return size, nil
}

// ExportTo writes image name as an archive to out, a file the caller
// opened for writing (a regular file, flushed to disk before it returns,
// or a pipe). A running machine is archived from a temporary read-only
// snapshot so the archive is consistent. progress gets bytes of file data
// done and the total. allXattrs carries every extended attribute, not
// only archive.Portable ones. It returns the bytes written to out.
func (m *Manager) ExportTo(ctx context.Context, name string, out *os.File, format archive.Format, allXattrs bool, progress func(done, total int64)) (int64, error) {
	if err := conf.ValidateMachineName(name); err != nil {
		return 0, err
	}
	img, err := m.image(name, m.running(), false)
	if err != nil {
		return 0, err
	}
	// No restore, rename or removal may change the tree under the archive.
	unlock, err := m.Pool.Lock(name)
	if err != nil {
		return 0, err
	}
	defer unlock()
	src, done, err := m.stable(img)
	if err != nil {
		return 0, err
	}
	defer done()
	tree, err := m.Pool.OpenTree(src)
	if err != nil {
		return 0, err
	}
	defer tree.Close()
	// The total is for progress only: it is summed beside the export, not
	// before it (a walk of the whole tree, a tenth of an export's time).
	var total atomic.Int64
	summed := make(chan struct{})
	go func() {
		defer close(summed)
		n, _ := image.Usage(tree)
		total.Store(n)
	}()
	defer func() { <-summed }() // tree stays open until the walk is done
	// A pipe whose reader stalls must not outlive the request.
	defer context.AfterFunc(ctx, func() { out.SetWriteDeadline(time.Now()) })()
	// A compressor process writes straight to a regular file (its size
	// then tells what was written); a pipe's bytes are counted on the way.
	var w io.Writer = out
	cw := &countingWriter{w: out}
	start := int64(-1)
	if fi, err := out.Stat(); err == nil && fi.Mode().IsRegular() {
		start, _ = out.Seek(0, io.SeekCurrent)
	}
	if start < 0 {
		w = cw
	}
	z, err := archive.Compressor(format, w)
	if err != nil {
		return 0, err
	}
	if err := archive.Write(ctx, tree, z, archive.Options{Count: func(done int64) { progress(done, total.Load()) }, AllXattrs: allXattrs}); err != nil {
		z.Close()
		return 0, fmt.Errorf("export %s: %w", name, noSpace(err))
	}
	if err := z.Close(); err != nil {
		return 0, fmt.Errorf("export %s: %w", name, noSpace(err))
	}
	if start < 0 {
		return cw.n, nil
	}
	if err := out.Sync(); err != nil {
		return 0, fmt.Errorf("export %s: %w", name, noSpace(err))
	}
	// The compressor process wrote through its own descriptor of the file
	// (O_APPEND or not, its offset is shared with ours).
	end, err := out.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	return end - start, nil
}

// stable is where img's tree can be read without it changing meanwhile:
// its own path, or for a running machine a snapshot, removed by done.
func (m *Manager) stable(img *Image) (path string, done func(), err error) {
	if !img.Running {
		return img.Path, func() {}, nil
	}
	if img.Type != "subvolume" {
		return "", nil, fmt.Errorf("%s: a running machine can be read consistently only from btrfs: %w", img.Name, ErrRunning)
	}
	snap := m.Pool.TempPath(img.Name + "-read")
	if err := m.Pool.CopyTree(img.Path, snap); err != nil {
		return "", nil, err
	}
	return snap, func() { m.Pool.RemoveTree(snap) }, nil
}

// Import makes machine name from the archive file src, a path of berthd's
// host named by root. A symlink there is refused, not followed, and only a
// regular file is read.
func (m *Manager) Import(ctx context.Context, src, name string, allXattrs bool, progress func(done, total int64)) (*Image, error) {
	f, err := OpenArchive(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", src, ErrBadArchive, err)
	}
	defer f.Close()
	return m.ImportFrom(ctx, f, name, allXattrs, progress)
}

// OpenArchive opens a regular file without following a symlink in its
// last component; O_NONBLOCK keeps a FIFO there from hanging the open.
func OpenArchive(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, errors.New("not a regular file")
	}
	return f, nil
}

// ImportFrom makes machine name from the archive read from in (a file the
// caller opened, or a pipe), under a temporary name renamed into place
// when complete. Whatever goes wrong, nothing is left in the pool.
// allXattrs applies every extended attribute, not only archive.Portable
// ones.
func (m *Manager) ImportFrom(ctx context.Context, in *os.File, name string, allXattrs bool, progress func(done, total int64)) (_ *Image, err error) {
	if err := conf.ValidateMachineName(name); err != nil {
		return nil, err
	}
	var total int64
	if fi, err := in.Stat(); err == nil && fi.Mode().IsRegular() {
		total = fi.Size()
	}
	unlock, err := m.claim(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// A pipe whose writer stalls must not outlive the request.
	defer context.AfterFunc(ctx, func() { in.SetReadDeadline(time.Now()) })()
	cr := &countingReader{r: in}
	r, _, err := archive.Decompressor(cr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", in.Name(), ErrBadArchive, err)
	}
	defer r.Close()
	err = m.buildTree(name, func(tmp string) error {
		if err := archive.Extract(ctx, r, tmp, archive.Options{Count: func(int64) { progress(cr.n, total) }, AllXattrs: allXattrs}); err != nil {
			var ue *archive.UnsafeError
			if errors.As(err, &ue) || errors.Is(err, context.Canceled) {
				return err
			}
			if isNoSpace(err) {
				return noSpace(err)
			}
			return fmt.Errorf("%s: %w: %v", in.Name(), ErrBadArchive, err)
		}
		if err := r.Close(); err != nil {
			return fmt.Errorf("%s: %w: %v", in.Name(), ErrBadArchive, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m.image(name, nil, false)
}

// buildTree makes machine name from what fill writes into a new, empty
// tree under a temporary name, renamed into place when fill succeeds;
// whatever fails, nothing is left in the pool.
func (m *Manager) buildTree(name string, fill func(tmp string) error) (err error) {
	tmp := m.Pool.TempPath(name)
	defer func() {
		if rerr := m.Pool.RemoveTree(tmp); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	if err := m.Pool.NewTree(tmp); err != nil {
		return err
	}
	if err := fill(tmp); err != nil {
		return err
	}
	return m.commit(tmp, name)
}

// ErrNoSpace is a file system that ran out of space or quota.
var ErrNoSpace = errors.New("no space left")

func isNoSpace(err error) bool { return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) }

// noSpace marks an out-of-space error as ErrNoSpace and leaves others.
func noSpace(err error) error {
	if isNoSpace(err) && !errors.Is(err, ErrNoSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// remember notes a temporary file outside the pool in StateDir, so that
// Recover can delete it if berthd dies before it is renamed or removed.
func (m *Manager) remember(tmp string) (forget func()) {
	if m.StateDir == "" {
		return func() {}
	}
	if err := os.MkdirAll(m.StateDir, 0o700); err != nil {
		return func() {}
	}
	note, err := os.CreateTemp(m.StateDir, "export-*")
	if err != nil {
		return func() {}
	}
	note.WriteString(tmp)
	note.Close()
	return func() { os.Remove(note.Name()) }
}

// recoverTransfers deletes the temporary files of interrupted exports.
func (m *Manager) recoverTransfers() []error {
	var errs []error
	notes, _ := filepath.Glob(filepath.Join(m.StateDir, "export-*"))
	for _, n := range notes {
		if tmp, err := os.ReadFile(n); err == nil && len(tmp) > 0 {
			if err := os.Remove(string(tmp)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		os.Remove(n)
	}
	return errs
}

type countingReader struct {
	r io.Reader
	n int64
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
