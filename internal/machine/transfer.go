package machine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/internal/pool"
)

// Transfer errors.
var (
	ErrArchiveExists = errors.New("archive exists")
	ErrBadArchive    = errors.New("bad archive")
)

// Export writes image name to the archive file dst. A running machine is
// archived from a temporary read-only snapshot so the archive is
// consistent. progress gets bytes of file data done and the total.
func (m *Manager) Export(ctx context.Context, name, dst string, format archive.Format, force bool, progress func(done, total int64)) (size int64, err error) {
	if err := conf.ValidateMachineName(name); err != nil {
		return 0, err
	}
	img, err := m.image(name, m.running(), false)
	if err != nil {
		return 0, err
	}
	if !filepath.IsAbs(dst) {
		return 0, fmt.Errorf("%s: not an absolute path", dst)
	}
	if _, err := os.Lstat(dst); err == nil && !force {
		return 0, fmt.Errorf("%s: %w", dst, ErrArchiveExists)
	}
	// No restore, rename or removal may change the tree under the archive.
	unlock, err := m.Pool.Lock(name)
	if err != nil {
		return 0, err
	}
	defer unlock()
	src := img.Path
	if img.Running {
		if img.Type != "subvolume" {
			return 0, fmt.Errorf("%s: a running machine can be exported consistently only from btrfs: %w", name, ErrRunning)
		}
		snap := m.Pool.TempPath(name + "-export")
		if err := m.Pool.CopyTree(img.Path, snap); err != nil {
			return 0, err
		}
		defer m.Pool.RemoveTree(snap)
		src = snap
	}
	total, _ := pool.Usage(src)
	f, err := os.CreateTemp(filepath.Dir(dst), ".#berth-"+filepath.Base(dst)+"-*")
	if err != nil {
		return 0, fmt.Errorf("export to %s: %w", dst, err)
	}
	tmp := f.Name()
	forget := m.remember(tmp)
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
		forget()
	}()
	cw, err := archive.Compressor(format, f)
	if err != nil {
		return 0, err
	}
	if err := archive.Write(ctx, src, cw, func(done int64) { progress(done, total) }); err != nil {
		cw.Close()
		return 0, fmt.Errorf("export %s: %w", name, err)
	}
	if err := cw.Close(); err != nil {
		return 0, fmt.Errorf("export %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	fi, _ := f.Stat()
	if err := f.Close(); err != nil {
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
	return fi.Size(), nil
}

// Import makes machine name from the archive file src, under a temporary
// name renamed into place when complete.
func (m *Manager) Import(ctx context.Context, src, name string, progress func(done, total int64)) (_ *Image, err error) {
	if err := conf.ValidateMachineName(name); err != nil {
		return nil, err
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", src, ErrBadArchive, err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	unlock, err := m.claim(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	cr := &countingReader{r: f}
	r, _, err := archive.Decompressor(cr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", src, ErrBadArchive, err)
	}
	defer r.Close()
	tmp := m.Pool.TempPath(name)
	defer func() {
		if rerr := m.Pool.RemoveTree(tmp); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	if err := m.Pool.NewTree(tmp); err != nil {
		return nil, err
	}
	if err := archive.Extract(ctx, r, tmp, func(int64) { progress(cr.n, fi.Size()) }); err != nil {
		var ue *archive.UnsafeError
		if errors.As(err, &ue) || errors.Is(err, context.Canceled) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w: %v", src, ErrBadArchive, err)
	}
	if err := r.Close(); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", src, ErrBadArchive, err)
	}
	if err := m.commit(tmp, name); err != nil {
		return nil, err
	}
	return m.image(name, nil, false)
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

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
