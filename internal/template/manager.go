package template

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/image"
	"github.com/berth-project/berth/internal/pool"
)

// Errors the service maps to its typed varlink errors.
var (
	ErrNotFound = errors.New("no such template")
	ErrExists   = errors.New("already exists")
	ErrBusy     = pool.ErrBusy
)

// Info describes a template.
type Info struct {
	Name     string    `json:"name"`
	Path     string    `json:"-"`
	Kind     string    `json:"-"`
	ReadOnly bool      `json:"-"`
	Created  time.Time `json:"created"`
	Recipe   Recipe    `json:"recipe"`
	Packages []string  `json:"packages,omitempty"`
}

// Manager owns the templates of one pool.
type Manager struct {
	Pool *pool.Pool
	// CacheDir holds downloaded packages, per suite and architecture.
	CacheDir string
}

// DefaultCacheDir is where packages are kept between builds.
const DefaultCacheDir = "/var/cache/berth"

// baseDir keeps bootstrapped base trees in the pool's state directory,
// hidden from machined, so that they snapshot onto templates.
func (m *Manager) baseDir() string { return filepath.Join(m.Pool.StateDir(), "bases") }

func (m *Manager) debCache(r *Recipe) (string, error) {
	d := filepath.Join(m.CacheDir, "debs", r.Suite+"-"+r.Architecture)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("package cache %s: %w", d, err)
	}
	return d, nil
}

func (m *Manager) lock(name string) (func(), error) { return m.Pool.Lock(name) }

// Recover deletes what interrupted builds left in the pool. Only one
// berthd runs, so anything under a temporary name is dead.
func (m *Manager) Recover() []error {
	var errs []error
	left := m.Pool.Leftovers()
	if ents, err := os.ReadDir(m.baseDir()); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".#") {
				left = append(left, filepath.Join(m.baseDir(), e.Name()))
			}
		}
	}
	for _, p := range left {
		if err := m.Pool.RemoveTree(p); err != nil {
			errs = append(errs, fmt.Errorf("remove leftover %s: %w", p, err))
		}
	}
	return errs
}

// Create builds template name from r, reporting progress, and returns it.
// The tree is built under a temporary name and renamed into place only
// when complete; on any failure or cancellation nothing is left behind.
func (m *Manager) Create(ctx context.Context, name string, r Recipe, report func(Progress)) (_ *Info, err error) {
	if err := conf.ValidateMachineName(name); err != nil {
		return nil, err
	}
	if err := r.Normalize(); err != nil {
		return nil, err
	}
	unlock, err := m.lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if m.Pool.Exists(name) {
		return nil, fmt.Errorf("%s: %w", m.Pool.Path(name), ErrExists)
	}
	if err := r.checkMirror(ctx); err != nil {
		return nil, err
	}
	debs, err := m.debCache(&r)
	if err != nil {
		return nil, err
	}

	base, err := m.base(ctx, &r, debs, report)
	if err != nil {
		return nil, err
	}
	tmp := m.Pool.TempPath(name)
	defer func() {
		// Reached with tmp still present only on failure.
		if rerr := m.Pool.RemoveTree(tmp); rerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up %s: %w", tmp, rerr))
		}
	}()
	report(Progress{Phase: "install", Percent: 60, Message: "making " + name + " from the base tree"})
	if err := m.Pool.CopyTree(base, tmp); err != nil {
		return nil, err
	}
	if len(r.Include) > 0 {
		if err := installPackages(ctx, tmp, debs, r.Include, 60, 90, report); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	report(Progress{Phase: "finish", Percent: 92, Message: "making the tree vanilla and read-only"})
	info := &Info{Name: name, Created: time.Now().UTC().Truncate(time.Second), Recipe: r}
	if info.Packages, err = packages(tmp); err != nil {
		return nil, err
	}
	id, err := m.finish(tmp)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.Pool.Commit(tmp, name); err != nil {
		if errors.Is(err, pool.ErrExists) {
			return nil, fmt.Errorf("%s: %w", m.Pool.Path(name), ErrExists)
		}
		return nil, err
	}
	if err := m.record(name, id, info); err != nil {
		return nil, err
	}
	report(Progress{Phase: "finish", Percent: 100, Message: "template " + name + " ready"})
	return m.Show(name)
}

// base returns the cached base tree for r, bootstrapping it on first use.
func (m *Manager) base(ctx context.Context, r *Recipe, debs string, report func(Progress)) (string, error) {
	key := r.baseKey()
	final := filepath.Join(m.baseDir(), key)
	if _, err := os.Stat(filepath.Join(final, "usr/lib/os-release")); err == nil {
		report(Progress{Phase: "bootstrap", Percent: 50, Message: "reusing the cached " + r.Suite + " base tree"})
		return final, nil
	}
	unlock, err := m.lock(".base/" + key)
	if err != nil {
		return "", err
	}
	defer unlock()
	if err := os.MkdirAll(m.baseDir(), 0o700); err != nil {
		return "", err
	}
	tmp := filepath.Join(m.baseDir(), ".#"+key)
	if err := m.Pool.RemoveTree(tmp); err != nil {
		return "", err
	}
	if err := m.Pool.NewTree(tmp); err != nil {
		return "", err
	}
	base := *r
	base.Include = nil // the base is shared by every include list
	report(Progress{Phase: "bootstrap", Percent: 1, Message: fmt.Sprintf("bootstrapping %s %s (%s) with %s", r.Suite, r.Variant, r.Architecture, r.Bootstrapper)})
	err = bootstrap(ctx, &base, tmp, debs, 1, 55, report)
	if err == nil {
		err = m.Pool.SetReadOnly(tmp, true)
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		if rerr := m.Pool.RemoveTree(tmp); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return "", err
	}
	return final, nil
}

// packages lists what dpkg installed in the tree, read from the tree's
// own database by the host's dpkg-query.
func packages(root string) ([]string, error) {
	out, err := exec.Command("dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"),
		"-W", "-f=${Package} ${Version}\n").Output()
	if err != nil {
		return nil, fmt.Errorf("list packages in %s: %w", root, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	sort.Strings(lines)
	return lines, nil
}

// finish strips from the built tree tmp what would make clones share
// identity or stale state, makes it read-only, and returns its ID.
func (m *Manager) finish(tmp string) (string, error) {
	f, err := m.Pool.OpenTree(tmp)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := image.ResetIdentity(f); err != nil {
		return "", err
	}
	for _, glob := range []string{"var/lib/apt/lists/*_*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb"} {
		if err := image.RemoveMatching(f, glob); err != nil {
			return "", err
		}
	}
	if err := image.SetReadOnly(f, true); err != nil {
		return "", err
	}
	return image.ID(f)
}

// record keeps what berth knows of template name, outside its tree.
func (m *Manager) record(name, id string, info *Info) error {
	recipe, err := json.Marshal(info.Recipe)
	if err != nil {
		return err
	}
	return m.Pool.Records().Put(&image.Record{Name: name, ID: id, Kind: image.KindTemplate,
		Created: info.Created, Recipe: recipe, Packages: info.Packages})
}

// List returns every template in the pool, sorted by name. A template is
// a tree whose record names it; a machine cloned from one carries the
// record of its template, under another name.
func (m *Manager) List() ([]Info, error) {
	names, err := m.Pool.Entries()
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, n := range names {
		info, err := m.read(n, false)
		if err == nil {
			out = append(out, *info)
		}
	}
	return out, nil
}

// Show returns one template with its package list.
func (m *Manager) Show(name string) (*Info, error) {
	if err := conf.ValidateMachineName(name); err != nil {
		return nil, err
	}
	return m.read(name, true)
}

func (m *Manager) read(name string, withPackages bool) (*Info, error) {
	p := m.Pool.Path(name)
	f, err := m.Pool.OpenTree(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	defer f.Close()
	r := m.Pool.Records().Get(name, f)
	if r == nil || r.Kind != image.KindTemplate {
		return nil, fmt.Errorf("%s is not a template: %w", name, ErrNotFound)
	}
	info := &Info{Name: name, Created: r.Created, Path: p, Kind: image.Kind(f), ReadOnly: image.ReadOnly(f)}
	if len(r.Recipe) > 0 {
		if err := json.Unmarshal(r.Recipe, &info.Recipe); err != nil {
			return nil, fmt.Errorf("record of %s: %w", name, err)
		}
	}
	if withPackages {
		info.Packages = r.Packages
	}
	return info, nil
}

// Remove deletes template name.
func (m *Manager) Remove(name string) error {
	if _, err := m.Show(name); err != nil {
		return err
	}
	unlock, err := m.lock(name)
	if err != nil {
		return err
	}
	defer unlock()
	// Rename first so the template vanishes at once, then delete.
	tmp := m.Pool.TempPath(name)
	if err := os.Rename(m.Pool.Path(name), tmp); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	if err := m.Pool.Records().Delete(name); err != nil {
		return err
	}
	return m.Pool.RemoveTree(tmp)
}

// Adopt makes the image name a template: read-only where the file system
// can, and recorded as one. It is how an admin says that an image berth
// did not build (machinectl's, an import, a pull) is a template; nothing
// in the image itself can say so.
func (m *Manager) Adopt(name string) (*Info, error) {
	if err := conf.ValidateMachineName(name); err != nil {
		return nil, err
	}
	unlock, err := m.lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if info, err := m.read(name, false); err == nil {
		return info, nil
	}
	f, err := m.Pool.OpenTree(m.Pool.Path(name))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	defer f.Close()
	if err := image.SetReadOnly(f, true); err != nil {
		return nil, err
	}
	id, err := image.ID(f)
	if err != nil {
		return nil, err
	}
	if err := m.record(name, id, &Info{Name: name, Created: time.Now().UTC().Truncate(time.Second)}); err != nil {
		return nil, err
	}
	return m.read(name, true)
}
