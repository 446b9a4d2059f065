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
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/parallel"
	"github.com/berth-project/berth/internal/rawfile"
	"github.com/berth-project/berth/internal/sdversion"
)

// SearchDirs are berth's config roots, highest priority first, as systemd
// orders /etc, /run, /usr/local/lib and /usr/lib.
var SearchDirs = []string{"/etc/berth", "/run/berth", "/usr/local/lib/berth", "/usr/lib/berth"}

const suffix = ".toml"

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
	// Schema is what is loaded; Machines when nil.
	Schema *Schema
	// Systemd returns the release of the systemd that will read the
	// output; the installed systemd-nspawn's when nil.
	Systemd func() (int, error)
}

func (l *Loader) schema() *Schema {
	if l.Schema != nil {
		return l.Schema
	}
	return Machines
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
	sc := l.Scan()
	defer sc.Close()
	out := make([]Result, len(sc.Names))
	parallel.For(len(out), func(i int) { out[i] = sc.Load(i) })
	return out
}

// Scan is one look at the search path: which machines exist and which
// files make each. The generator loads machines from it one at a time, in
// parallel, so that it never holds more than a few parsed machines.
type Scan struct {
	Names []string // unmasked machines, sorted
	// Errs are the directories of the search path that exist but could
	// not be read: machines in them are unknown, so a caller must not
	// take their absence for removal.
	Errs []error
	l    *Loader
	idx  *index
}

// Scan lists the search path once. Close it when done.
func (l *Loader) Scan() *Scan {
	idx := l.scan()
	sc := &Scan{l: l, idx: idx, Names: make([]string, 0, len(idx.main)), Errs: idx.errs}
	for name, e := range idx.main {
		if !e.masked {
			sc.Names = append(sc.Names, name)
		}
	}
	slices.Sort(sc.Names)
	return sc
}

// Load parses and merges machine Names[i]. It is safe for concurrent use.
func (sc *Scan) Load(i int) Result {
	name := sc.Names[i]
	e := sc.idx.main[name]
	res := Result{Name: name, Source: e.path}
	if err := ValidateMachineName(name); err != nil {
		res.Err = &Error{File: e.path, Msg: err.Error()}
		return res
	}
	res.Machine, res.Err = sc.l.load(sc.idx, name, e)
	return res
}

// Close releases the directories the scan holds open.
func (sc *Scan) Close() { sc.idx.close() }

// Load loads the machine (or template) called name.
func (l *Loader) Load(name string) (*Machine, error) {
	if err := ValidateMachineName(name); err != nil {
		return nil, err
	}
	return l.load1(name)
}

func (l *Loader) load1(name string) (*Machine, error) {
	idx := l.scan()
	defer idx.close()
	e, ok := idx.main[name]
	switch {
	case !ok:
		return nil, fmt.Errorf("%s %s: no %s in %s: %w", l.schema().Kind, name, filepath.Join(l.schema().Dir, name+suffix),
			strings.Join(l.dirs(), ", "), fs.ErrNotExist)
	case e.masked:
		return nil, fmt.Errorf("%s: %w", e.path, ErrMasked)
	}
	return l.load(idx, name, e)
}

// index is one scan of the search path.
type index struct {
	main     map[string]entry          // NAME → highest-priority machines/NAME.toml
	dropDirs map[string]map[int]string // NAME → search-dir index → NAME.toml.d
	global   [][]entry                 // search-dir index → machines.d/*.toml
	// dirFds holds each search dir's machines/ open (O_PATH), or -1, so
	// that main files are opened relative to it: one path component for
	// the kernel to walk instead of the whole path, per machine.
	dirFds []int
	errs   []error // directories that exist but cannot be read
}

func (idx *index) close() {
	for _, fd := range idx.dirFds {
		if fd >= 0 {
			syscall.Close(fd)
		}
	}
}

type entry struct {
	path   string // as the target system sees it
	base   string
	masked bool // a symlink to /dev/null, systemd's way of masking
	dir    int  // search-dir index of a main file
}

func (l *Loader) scan() *index {
	dirs := l.dirs()
	idx := &index{main: map[string]entry{}, dropDirs: map[string]map[int]string{},
		global: make([][]entry, len(dirs)), dirFds: make([]int, len(dirs))}
	for i, d := range dirs {
		mdir := filepath.Join(d, l.schema().Dir)
		idx.dirFds[i] = -1
		if fd, err := syscall.Open(l.host(mdir), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			idx.dirFds[i] = fd
		}
		ents, err := l.readDir(mdir)
		if err != nil {
			idx.errs = append(idx.errs, err)
		}
		for _, e := range ents {
			e.dir = i
			if name, ok := strings.CutSuffix(e.base, suffix+".d"); ok && name != "" {
				if idx.dropDirs[name] == nil {
					idx.dropDirs[name] = map[int]string{}
				}
				idx.dropDirs[name][i] = e.path
			} else if name, ok := strings.CutSuffix(e.base, suffix); ok && name != "" {
				if _, seen := idx.main[name]; !seen {
					idx.main[name] = e
				}
			}
		}
		if l.schema().AllDropIns == "" {
			continue
		}
		ents, err = l.readDir(filepath.Join(d, l.schema().AllDropIns))
		if err != nil {
			idx.errs = append(idx.errs, err)
		}
		for _, e := range ents {
			if strings.HasSuffix(e.base, suffix) {
				idx.global[i] = append(idx.global[i], e)
			}
		}
	}
	return idx
}

// readDir lists dir, noting masks. A missing directory is empty; one that
// cannot be read is an error (and lists what could be read of it).
func (l *Loader) readDir(dir string) ([]entry, error) {
	ents, err := os.ReadDir(l.host(dir))
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	} else if err != nil {
		err = &Error{File: dir, Msg: fmt.Sprintf("cannot read directory: %v", errors.Unwrap(err))}
	}
	out := make([]entry, 0, len(ents))
	for _, de := range ents {
		e := entry{path: filepath.Join(dir, de.Name()), base: de.Name()}
		if de.Type()&fs.ModeSymlink != 0 {
			t, err := os.Readlink(l.host(e.path))
			e.masked = err == nil && t == os.DevNull
		} else if de.IsDir() && !strings.HasSuffix(de.Name(), ".d") {
			continue
		}
		out = append(out, e)
	}
	return out, err
}

// dropIns returns the drop-ins that apply to name, in the order they are
// applied: sorted by file name, a file in a higher-priority directory (or in
// NAME.toml.d rather than machines.d of the same directory) hiding a
// same-named one.
func (idx *index) dropIns(l *Loader, name string) ([]string, error) {
	byBase := map[string]entry{}
	add := func(e entry) {
		if _, ok := byBase[e.base]; !ok {
			byBase[e.base] = e
		}
	}
	for i := range idx.global {
		if d, ok := idx.dropDirs[name][i]; ok {
			ents, err := l.readDir(d)
			if err != nil {
				// Without all its drop-ins, a machine's settings are
				// not the admin's.
				return nil, err
			}
			for _, e := range ents {
				if strings.HasSuffix(e.base, suffix) {
					add(e)
				}
			}
		}
		for _, e := range idx.global[i] {
			add(e)
		}
	}
	var out []string
	for _, base := range slices.Sorted(maps.Keys(byBase)) {
		if e := byBase[base]; !e.masked {
			out = append(out, e.path)
		}
	}
	return out, nil
}

func (l *Loader) load(idx *index, name string, main entry) (*Machine, error) {
	dropIns, err := idx.dropIns(l, name)
	if err != nil {
		return nil, Errors{err.(*Error)}
	}
	files := append([]string{main.path}, dropIns...)
	parsed := make([]*File, 0, len(files))
	var errs Errors
	for i, p := range files {
		var f *File
		var err error
		if i == 0 && idx.dirFds[main.dir] >= 0 {
			f, err = l.parseAt(idx.dirFds[main.dir], main.base, p)
		} else {
			f, err = l.parseFile(p)
		}
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
	m, err := Merge(name, parsed)
	if err != nil {
		return nil, err
	}
	systemd := l.Systemd
	if systemd == nil {
		systemd = sdversion.Installed
	}
	if err := m.CheckSystemd(systemd); err != nil {
		return nil, err
	}
	return m, nil
}

func (l *Loader) parseFile(p string) (*File, error) {
	return l.parseAt(rawfile.CWD, l.host(p), p)
}

// parseAt reads name relative to dirfd and parses it as the file p.
func (l *Loader) parseAt(dirfd int, name, p string) (*File, error) {
	src, err := rawfile.ReadAt(dirfd, name)
	if err != nil {
		return nil, Errors{{File: p, Msg: fmt.Sprintf("cannot read: %v", err)}}
	}
	return l.schema().Parse(p, src)
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
