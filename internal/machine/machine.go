// Package machine clones machines from templates and lists, removes and
// renames the images of the pool.
package machine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/image"
	"github.com/berth-project/berth/internal/parallel"
	"github.com/berth-project/berth/internal/pool"
	"github.com/berth-project/berth/internal/registry"
)

// Errors the service maps to its typed varlink errors.
var (
	ErrNoImage    = errors.New("no such image")
	ErrNoTemplate = errors.New("no such template")
	ErrExists     = errors.New("already exists")
	ErrRunning    = errors.New("machine is running")
	ErrWrongKind  = errors.New("wrong kind of image")
)

// KindError says what kind an image is when the operation needs the other.
type KindError struct{ Name, Kind string }

func (e *KindError) Error() string { return fmt.Sprintf("%s is a %s", e.Name, e.Kind) }
func (e *KindError) Unwrap() error { return ErrWrongKind }

// Image describes one image of the pool.
type Image struct {
	Name, Path, Kind, Type string
	ReadOnly               bool
	Size                   int64 // -1 when not computed
	Created                time.Time
	Template               string
	Running                bool
}

// Runtime tells which machines run; machined over D-Bus in berthd.
type Runtime interface {
	Running() (map[string]bool, error)
	Terminate(name string) error
}

// Manager works on the machines of one pool.
type Manager struct {
	Pool    *pool.Pool
	Runtime Runtime
	// StateDir records exports in progress (/run/berth/transfers in berthd).
	StateDir string
	// Registry pulls docker:// images; nil refuses them.
	Registry *registry.Client
}

func (m *Manager) image(name string, running map[string]bool, withSize bool) (*Image, error) {
	return m.imageWith(name, running, withSize, nil)
}

// imageWith is image with the pool's records by tree ID, read once for a
// listing (nil: read when needed).
func (m *Manager) imageWith(name string, running map[string]bool, withSize bool, byID map[string]*image.Record) (*Image, error) {
	p := m.Pool.Path(name)
	f, err := m.Pool.OpenTree(p)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s: %w", name, ErrNoImage)
		}
		if errors.Is(err, image.ErrSymlink) {
			return nil, fmt.Errorf("%s: not a directory tree: %w", name, ErrNoImage)
		}
		return nil, err
	}
	defer f.Close()
	img := &Image{Name: name, Path: p, Kind: image.KindMachine, Type: image.Kind(f), ReadOnly: image.ReadOnly(f),
		Size: -1, Running: running[name], Created: image.Created(f)}
	// What kind it is and where it came from are berth's records, never
	// what the tree itself holds.
	if r := m.Pool.Records().Get(name, f); r != nil {
		img.Kind, img.Template = r.Kind, r.Origin
		if img.Kind != image.KindTemplate {
			img.Kind = image.KindMachine
		}
	} else if parent := image.ParentID(f); parent != "" {
		// A btrfs clone needs no record: the kernel keeps which
		// subvolume it was snapshotted from.
		if byID == nil {
			byID = m.Pool.Records().ByID()
		}
		if t := byID[parent]; t != nil && t.Kind == image.KindTemplate {
			img.Template = t.Name
		}
	}
	if withSize {
		img.Size, _ = image.Usage(f)
	}
	return img, nil
}

func (m *Manager) running() map[string]bool {
	if m.Runtime == nil {
		return nil
	}
	r, _ := m.Runtime.Running()
	return r
}

// List returns every image of the pool, sorted by name.
func (m *Manager) List() ([]Image, error) {
	names, err := m.Pool.Entries()
	if err != nil {
		return nil, err
	}
	running, byID := m.running(), m.Pool.Records().ByID()
	imgs := make([]*Image, len(names))
	// Sizes need a walk of each tree; walk them on every CPU.
	parallel.For(len(names), func(i int) { imgs[i], _ = m.imageWith(names[i], running, true, byID) })
	var out []Image
	for _, img := range imgs {
		if img != nil {
			out = append(out, *img)
		}
	}
	return out, nil
}

// Show returns one image, with its size.
func (m *Manager) Show(name string) (*Image, error) {
	if err := conf.ValidateMachineName(name); err != nil {
		return nil, err
	}
	return m.image(name, m.running(), true)
}

// Clone makes machine name from template tmpl: a recursive snapshot on
// btrfs, a reflinking copy elsewhere, under a temporary name renamed into
// place when complete.
func (m *Manager) Clone(ctx context.Context, tmpl, name string) (_ *Image, err error) {
	for _, n := range []string{tmpl, name} {
		if err := conf.ValidateMachineName(n); err != nil {
			return nil, err
		}
	}
	t, err := m.image(tmpl, nil, false)
	if errors.Is(err, ErrNoImage) || err == nil && t.Kind != "template" {
		return nil, fmt.Errorf("%s: %w", tmpl, ErrNoTemplate)
	} else if err != nil {
		return nil, err
	}
	unlock, err := m.claim(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if ok, err := m.snapshotClone(t.Path, name); ok || err != nil {
		if err != nil {
			return nil, err
		}
		return m.image(name, nil, false)
	}
	tmp := m.Pool.TempPath(name)
	defer func() {
		if rerr := m.Pool.RemoveTree(tmp); rerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up %s: %w", tmp, rerr))
		}
	}()
	if err := m.Pool.CopyTree(t.Path, tmp); err != nil {
		return nil, err
	}
	id, err := m.prepareClone(tmp)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.commit(tmp, name); err != nil {
		return nil, err
	}
	if err := m.recordMachine(name, id, tmpl, time.Now()); err != nil {
		return nil, err
	}
	return m.image(name, nil, false)
}

// treeID is the ID of the tree at path (its subvolume UUID), which the
// pool's records are tied to.
func (m *Manager) treeID(path string) (string, error) {
	f, err := m.Pool.OpenTree(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return image.ID(f)
}

// recordMachine notes that the tree id, machine name, came from template
// origin.
func (m *Manager) recordMachine(name, id, origin string, created time.Time) error {
	rec := &image.Record{Name: name, ID: id, Kind: image.KindMachine, Origin: origin, Created: created.UTC()}
	if err := m.Pool.Records().Put(rec); err != nil {
		return fmt.Errorf("record %s: %w", name, err)
	}
	return nil
}

// snapshotClone makes name a clone of the template at src the way
// machinectl clone does, when that is all a clone needs: src is a
// subvolume on btrfs with no subvolumes nested in it (one snapshot is then
// the whole, atomic copy) and no identity to reset (as every template
// berth builds). Nothing else is written, not even a record: the new
// subvolume's parent UUID names its template. It reports false, having
// done nothing, when the tree needs the general path.
func (m *Manager) snapshotClone(src, name string) (bool, error) {
	f, err := m.Pool.OpenTree(src)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if !image.IsSubvolume(f) || image.HasIdentity(f) {
		return false, nil
	}
	if nested, err := image.Nested(f); err != nil || len(nested) > 0 {
		return false, err
	}
	if err := m.Pool.SnapshotInto(f, name); err != nil {
		if errors.Is(err, pool.ErrExists) {
			return true, fmt.Errorf("%s: %w", name, ErrExists)
		}
		return true, err
	}
	return true, nil
}

// prepareClone makes the fresh copy tmp writable and gives it no identity
// of its own (an empty machine-id, initialized on first boot; no hostname,
// so systemd-nspawn's machine name is used), and returns its ID.
func (m *Manager) prepareClone(tmp string) (string, error) {
	f, err := m.Pool.OpenTree(tmp)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := image.SetReadOnly(f, false); err != nil {
		return "", err
	}
	if err := image.ResetIdentity(f); err != nil {
		return "", err
	}
	return image.ID(f)
}

// claim locks name for a new image and checks that it is free.
func (m *Manager) claim(name string) (func(), error) {
	unlock, err := m.Pool.Lock(name)
	if err != nil {
		return nil, err
	}
	if m.Pool.Exists(name) {
		unlock()
		return nil, fmt.Errorf("%s: %w", name, ErrExists)
	}
	return unlock, nil
}

// commit renames the finished tree tmp to name, reporting a taken name
// as ErrExists.
func (m *Manager) commit(tmp, name string) error {
	if err := m.Pool.Commit(tmp, name); err != nil {
		if errors.Is(err, pool.ErrExists) {
			return fmt.Errorf("%s: %w", name, ErrExists)
		}
		return err
	}
	return nil
}

// machineImage loads name and checks that it is a machine.
func (m *Manager) machineImage(name string) (*Image, error) {
	if err := conf.ValidateMachineName(name); err != nil {
		return nil, err
	}
	img, err := m.image(name, m.running(), false)
	if err != nil {
		return nil, err
	}
	if img.Kind != "machine" {
		return nil, &KindError{name, img.Kind}
	}
	return img, nil
}

// Remove deletes machine name, nested subvolumes included; a running
// machine is terminated first if force, else refused.
func (m *Manager) Remove(name string, force bool) error {
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
		if !force {
			return fmt.Errorf("%s: %w", name, ErrRunning)
		}
		if err := m.Runtime.Terminate(name); err != nil {
			return fmt.Errorf("terminate %s: %w", name, err)
		}
	}
	// Rename first so the machine vanishes at once, then delete.
	tmp := m.Pool.TempPath(name)
	if err := os.Rename(img.Path, tmp); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	if err := m.Pool.RemoveTree(tmp); err != nil {
		return err
	}
	if err := m.Pool.Records().Delete(name); err != nil {
		return err
	}
	return m.removeSnapshots(name)
}

// Rename renames machine name to newName; refused while it runs.
func (m *Manager) Rename(name, newName string) error {
	img, err := m.machineImage(name)
	if err != nil {
		return err
	}
	if err := conf.ValidateMachineName(newName); err != nil {
		return err
	}
	for _, n := range []string{name, newName} {
		unlock, err := m.Pool.Lock(n)
		if err != nil {
			return err
		}
		defer unlock()
	}
	if img.Running {
		return fmt.Errorf("%s: %w", name, ErrRunning)
	}
	if m.Pool.Exists(newName) {
		return fmt.Errorf("%s: %w", newName, ErrExists)
	}
	if err := m.commit(img.Path, newName); err != nil {
		return err
	}
	if err := m.Pool.Records().Rename(name, newName); err != nil {
		return err
	}
	return m.moveSnapshots(name, newName)
}
