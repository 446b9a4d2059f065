package template

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/pool"
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

// metaPath is where a template records its recipe and package list,
// inside its own tree so that the record travels with it (and with the
// machines cloned from it).
const metaPath = "usr/lib/berth/template.json"

// Manager owns the templates of one pool.
type Manager struct {
	Pool *pool.Pool
	// CacheDir holds downloaded packages, per suite and architecture.
	CacheDir string
}

// DefaultCacheDir is where packages are kept between builds.
const DefaultCacheDir = "/var/cache/berth"

// baseDir keeps bootstrapped base trees in the pool itself, hidden from
// machined by the leading dot, so that they snapshot onto templates.
func (m *Manager) baseDir() string { return filepath.Join(m.Pool.Dir, ".berth-bases") }

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
	if err := vanilla(tmp, info); err != nil {
		return nil, err
	}
	if err := m.Pool.SetReadOnly(tmp, true); err != nil {
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

// vanilla strips what would make clones share identity or stale state,
// and writes the template's record.
func vanilla(root string, info *Info) error {
	// No machine-id: each clone gets its own on first boot.
	if err := os.WriteFile(filepath.Join(root, "etc/machine-id"), nil, 0o444); err != nil {
		return err
	}
	// No hostname: systemd-nspawn gives each machine its name.
	os.Remove(filepath.Join(root, "etc/hostname"))
	for _, glob := range []string{"var/lib/apt/lists/*_*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb"} {
		matches, _ := filepath.Glob(filepath.Join(root, glob))
		for _, p := range matches {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	meta := filepath.Join(root, metaPath)
	if err := os.MkdirAll(filepath.Dir(meta), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(meta, append(data, '\n'), 0o644)
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
	data, err := os.ReadFile(filepath.Join(p, metaPath))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(p, metaPath), err)
	}
	var info Info
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(p, metaPath), err)
	}
	if info.Name != name {
		return nil, fmt.Errorf("%s is a machine made from template %s: %w", name, info.Name, ErrNotFound)
	}
	info.Path, info.Kind, info.ReadOnly = p, m.Pool.Kind(p), m.Pool.ReadOnly(p)
	if !withPackages {
		info.Packages = nil
	}
	return &info, nil
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
	return m.Pool.RemoveTree(tmp)
}
