package conf

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// SearchDirs are berth's config roots, highest priority first, as systemd
// orders /etc, /run, /usr/local/lib and /usr/lib.
var SearchDirs = []string{"/etc/berth", "/run/berth", "/usr/local/lib/berth", "/usr/lib/berth"}

const (
	machinesDir = "machines"   // machines/NAME.toml, machines/NAME.toml.d/*.toml
	allDropIns  = "machines.d" // drop-ins for every machine, like systemd's service.d/
	suffix      = ".toml"
)

// ErrMasked is returned for a machine whose file is a symlink to /dev/null.
var ErrMasked = errors.New("masked")

// Loader finds and loads machine files. It is the only part of conf that
// touches the filesystem.
type Loader struct {
	// Root is prefixed to every path read, as with systemctl --root; the
	// paths reported and recorded stay as the target system sees them.
	Root string
	// Dirs overrides SearchDirs when non-nil.
	Dirs []string
}

func (l *Loader) dirs() []string {
	if l.Dirs != nil {
		return l.Dirs
	}
	return SearchDirs
}

func (l *Loader) host(p string) string { return filepath.Join(l.Root, p) }

// Result is one machine found by LoadAll: the merged machine, or why it was
// skipped.
type Result struct {
	Name    string
	Source  string // the main file, as the target system sees it
	Machine *Machine
	Err     error
}

// LoadAll loads every machine found in the search path, sorted by name. A
// bad file fails only its own machine; masked machines are left out.
func (l *Loader) LoadAll() []Result {
	var out []Result
	for _, name := range l.names() {
		src, err := l.mainFile(name)
		if errors.Is(err, ErrMasked) {
			continue
		}
		res := Result{Name: name, Source: src, Err: err}
		if err == nil {
			res.Machine, res.Err = l.load(name, src)
		}
		out = append(out, res)
	}
	return out
}

// Load loads the machine called name.
func (l *Loader) Load(name string) (*Machine, error) {
	if err := ValidateMachineName(name); err != nil {
		return nil, err
	}
	src, err := l.mainFile(name)
	if err != nil {
		return nil, err
	}
	return l.load(name, src)
}

// names lists every NAME for which some search dir has machines/NAME.toml.
// Invalid names are kept so that LoadAll reports them.
func (l *Loader) names() []string {
	seen := map[string]bool{}
	for _, d := range l.dirs() {
		ents, _ := os.ReadDir(l.host(filepath.Join(d, machinesDir)))
		for _, e := range ents {
			if n, ok := strings.CutSuffix(e.Name(), suffix); ok && !e.IsDir() && n != "" {
				seen[n] = true
			}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// mainFile returns the highest-priority machines/NAME.toml.
func (l *Loader) mainFile(name string) (string, error) {
	for _, d := range l.dirs() {
		p := filepath.Join(d, machinesDir, name+suffix)
		masked, err := l.isMask(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return p, err
		case masked:
			return p, fmt.Errorf("%s: %w", p, ErrMasked)
		}
		if err := ValidateMachineName(name); err != nil {
			return p, &Error{File: p, Msg: err.Error()}
		}
		return p, nil
	}
	return "", fmt.Errorf("machine %s: no %s in %s: %w", name, filepath.Join(machinesDir, name+suffix),
		strings.Join(l.dirs(), ", "), fs.ErrNotExist)
}

// isMask reports whether p is a symlink to /dev/null, systemd's way of
// masking a file.
func (l *Loader) isMask(p string) (bool, error) {
	fi, err := os.Lstat(l.host(p))
	if err != nil {
		return false, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		if t, err := os.Readlink(l.host(p)); err == nil && t == os.DevNull {
			return true, nil
		}
	}
	return false, nil
}

// dropIns returns the drop-ins that apply to name, in the order they are
// applied: sorted by file name, a file in a higher-priority directory (or in
// NAME.toml.d rather than machines.d) hiding a same-named one.
func (l *Loader) dropIns(name string) []string {
	byBase := map[string]string{}
	for _, d := range l.dirs() {
		for _, dir := range []string{filepath.Join(d, machinesDir, name+suffix+".d"), filepath.Join(d, allDropIns)} {
			ents, _ := os.ReadDir(l.host(dir))
			for _, e := range ents {
				if !strings.HasSuffix(e.Name(), suffix) || e.IsDir() {
					continue
				}
				if _, ok := byBase[e.Name()]; !ok {
					byBase[e.Name()] = filepath.Join(dir, e.Name())
				}
			}
		}
	}
	var out []string
	for _, base := range slices.Sorted(maps.Keys(byBase)) {
		p := byBase[base]
		if masked, err := l.isMask(p); err == nil && masked {
			continue
		}
		out = append(out, p)
	}
	return out
}

func (l *Loader) load(name, src string) (*Machine, error) {
	files := []string{src}
	files = append(files, l.dropIns(name)...)
	parsed := make([]*File, 0, len(files))
	var errs Errors
	for _, p := range files {
		f, err := l.parseFile(p)
		if err != nil {
			var es Errors
			if errors.As(err, &es) {
				errs = append(errs, es...)
				continue
			}
			return nil, err
		}
		parsed = append(parsed, f)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return Merge(name, parsed)
}

func (l *Loader) parseFile(p string) (*File, error) {
	src, err := os.ReadFile(l.host(p))
	if err != nil {
		return nil, Errors{{File: p, Msg: fmt.Sprintf("cannot read: %v", errors.Unwrap(err))}}
	}
	return Parse(p, src)
}

// ParseFile reads and parses one file outside the search path, for
// `berth verify`. A file named NAME.toml has NAME checked as a machine name.
func ParseFile(p string) (*File, error) {
	l := Loader{}
	f, err := l.parseFile(p)
	if err != nil {
		return nil, err
	}
	base := filepath.Base(p)
	if name, ok := strings.CutSuffix(base, suffix); ok && !strings.HasSuffix(filepath.Dir(p), ".d") {
		if err := ValidateMachineName(name); err != nil {
			return nil, Errors{{File: p, Msg: err.Error()}}
		}
	}
	return f, nil
}
