package machine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/image"
)

// Snapshot errors.
var (
	ErrNoSnapshot     = errors.New("no such snapshot")
	ErrSnapshotExists = errors.New("snapshot exists")
)

// SnapshotError names the machine and snapshot of a snapshot error.
type SnapshotError struct {
	Machine, Snapshot string
	Err               error
}

func (e *SnapshotError) Error() string {
	return fmt.Sprintf("snapshot %s of %s: %v", e.Snapshot, e.Machine, e.Err)
}
func (e *SnapshotError) Unwrap() error { return e.Err }

// SnapshotInfo describes one snapshot.
type SnapshotInfo struct {
	Machine, Name, Path string
	Created             time.Time
}

// snapshotDir keeps a machine's snapshots in the pool, hidden from
// machined, so that on btrfs they share extents with the machine.
func (m *Manager) snapshotDir(machine string) string {
	return filepath.Join(m.Pool.StateDir(), "snapshots", machine)
}

func (m *Manager) snapshotPath(machine, snap string) string {
	return filepath.Join(m.snapshotDir(machine), snap)
}

// Snapshot takes a read-only snapshot of machine name: atomic on btrfs,
// so consistent while it runs; a copy elsewhere, refused while it runs.
func (m *Manager) Snapshot(ctx context.Context, name, snap string) (_ *SnapshotInfo, err error) {
	img, err := m.machineImage(name)
	if err != nil {
		return nil, err
	}
	if err := conf.ValidateMachineName(snap); err != nil {
		return nil, err
	}
	unlock, err := m.Pool.Lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if img.Running && img.Type != "subvolume" {
		return nil, fmt.Errorf("%s: a copy of a running machine off btrfs would not be consistent: %w", name, ErrRunning)
	}
	dst := m.snapshotPath(name, snap)
	if _, err := os.Lstat(dst); err == nil {
		return nil, &SnapshotError{name, snap, ErrSnapshotExists}
	}
	if err := os.MkdirAll(m.snapshotDir(name), 0o700); err != nil {
		return nil, err
	}
	tmp := filepath.Join(m.snapshotDir(name), ".#"+snap)
	if err := m.Pool.RemoveTree(tmp); err != nil {
		return nil, err
	}
	defer func() {
		if rerr := m.Pool.RemoveTree(tmp); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	if err := m.Pool.CopyTree(img.Path, tmp); err != nil {
		return nil, err
	}
	if err := m.Pool.SetReadOnly(tmp, true); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, &SnapshotError{name, snap, ErrSnapshotExists}
		}
		return nil, err
	}
	return m.snapshotInfo(name, snap)
}

func (m *Manager) snapshotInfo(name, snap string) (*SnapshotInfo, error) {
	p := m.snapshotPath(name, snap)
	f, err := m.Pool.OpenTree(p)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, &SnapshotError{name, snap, ErrNoSnapshot}
		}
		return nil, err
	}
	defer f.Close()
	return &SnapshotInfo{Machine: name, Name: snap, Path: p, Created: image.Created(f)}, nil
}

// Snapshots lists the snapshots of machine name, oldest first.
func (m *Manager) Snapshots(name string) ([]SnapshotInfo, error) {
	if _, err := m.machineImage(name); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(m.snapshotDir(name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var out []SnapshotInfo
	for _, e := range ents {
		if e.Name()[0] == '.' {
			continue
		}
		if info, err := m.snapshotInfo(name, e.Name()); err == nil {
			out = append(out, *info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Restore puts machine name back to snapshot snap, atomically from the
// user's view: the restored tree is built aside and swapped in.
func (m *Manager) Restore(ctx context.Context, name, snap string) (err error) {
	img, err := m.machineImage(name)
	if err != nil {
		return err
	}
	unlock, err := m.Pool.Lock(name)
	if err != nil {
		return err
	}
	defer unlock()
	if img.Running {
		return fmt.Errorf("%s: %w", name, ErrRunning)
	}
	src := m.snapshotPath(name, snap)
	if _, err := os.Lstat(src); err != nil {
		return &SnapshotError{name, snap, ErrNoSnapshot}
	}
	fresh := m.Pool.TempPath(name)
	defer func() {
		// Before the swap: the unused restored tree; after: the old one.
		if rerr := m.Pool.RemoveTree(fresh); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	if err := m.Pool.CopyTree(src, fresh); err != nil {
		return err
	}
	if err := m.Pool.SetReadOnly(fresh, false); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Swap in one rename: the restored tree takes the machine's name and
	// the old tree takes the temporary one, deleted on the way out.
	if err := unix.Renameat2(unix.AT_FDCWD, fresh, unix.AT_FDCWD, img.Path, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	// The restored tree is a new one: it keeps the machine's template
	// only through a record of its own.
	if img.Template != "" {
		f, err := m.Pool.OpenTree(img.Path)
		if err != nil {
			return err
		}
		defer f.Close()
		id, err := image.ID(f)
		if err != nil {
			return err
		}
		return m.recordMachine(name, id, img.Template, img.Created)
	}
	return nil
}

// Recover deletes snapshots and export files left half-made by an
// interrupted berthd.
func (m *Manager) Recover() []error {
	var errs []error
	left, _ := filepath.Glob(filepath.Join(m.Pool.StateDir(), "snapshots", "*", ".#*"))
	for _, p := range left {
		if err := m.Pool.RemoveTree(p); err != nil {
			errs = append(errs, err)
		}
	}
	return append(errs, m.recoverTransfers()...)
}

// RemoveSnapshot deletes one snapshot.
func (m *Manager) RemoveSnapshot(name, snap string) error {
	if _, err := m.machineImage(name); err != nil {
		return err
	}
	if err := conf.ValidateMachineName(snap); err != nil {
		return err
	}
	p := m.snapshotPath(name, snap)
	if _, err := os.Lstat(p); err != nil {
		return &SnapshotError{name, snap, ErrNoSnapshot}
	}
	return m.Pool.RemoveTree(p)
}

// moveSnapshots follows a rename; removeSnapshots follows a removal.
func (m *Manager) moveSnapshots(from, to string) error {
	err := os.Rename(m.snapshotDir(from), m.snapshotDir(to))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (m *Manager) removeSnapshots(name string) error {
	ents, _ := os.ReadDir(m.snapshotDir(name))
	for _, e := range ents {
		if err := m.Pool.RemoveTree(filepath.Join(m.snapshotDir(name), e.Name())); err != nil {
			return err
		}
	}
	os.Remove(m.snapshotDir(name))
	return nil
}
