package generator

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/rawfile"
)

// writer is all the file system work of a run. It lists the directories it
// checks once, up front, keeps the output directories open and writes
// relative to them with bare system calls: at boot the generator runs for
// every machine, and the kernel's path walks and syscalls are most of its
// time.
type writer struct {
	cfg      Config
	existing map[string]bool // NAME → NspawnDir/NAME.nspawn exists
	adminEtc map[string]bool // NAME → /etc/systemd/nspawn/NAME.nspawn exists
	nspawn   dir             // NspawnDir
	out      dir             // the generator directory
	wants    dir             // its machines.target.wants
}

// dir is an output directory made and opened on first use.
type dir struct {
	path string // on the host
	once sync.Once
	fd   int
	err  error
}

func (d *dir) open() (int, error) {
	d.once.Do(func() {
		if d.err = os.MkdirAll(d.path, 0o755); d.err == nil {
			d.fd, d.err = unix.Open(d.path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		}
		if d.err != nil {
			d.err = fmt.Errorf("create %s: %w", d.path, d.err)
		}
	})
	return d.fd, d.err
}

func (d *dir) close() {
	d.once.Do(func() { d.err = errors.New("closed") })
	if d.err == nil {
		unix.Close(d.fd)
	}
}

func newWriter(cfg Config) *writer {
	w := &writer{cfg: cfg}
	w.nspawn.path = cfg.host(NspawnDir)
	w.out.path = cfg.host(cfg.OutDir)
	w.wants.path = filepath.Join(w.out.path, WantsDir)
	w.existing = listNspawn(w.nspawn.path)
	w.adminEtc = listNspawn(cfg.host("/etc/systemd/nspawn"))
	return w
}

func (w *writer) close() {
	w.nspawn.close()
	w.out.close()
	w.wants.close()
}

func listNspawn(dir string) map[string]bool {
	m := map[string]bool{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".nspawn"); ok {
			m[name] = true
		}
	}
	return m
}

// write puts o in place, every file atomically (a temporary name, then
// rename): systemd-nspawn may read the .nspawn file at any time, and a run
// killed midway must leave whole files or none, never a torn one.
func (w *writer) write(source string, o *Output) error {
	nfd, err := w.nspawn.open()
	if err != nil {
		return err
	}
	if w.existing[o.Name] {
		old, err := rawfile.ReadAt(nfd, o.Nspawn.Path)
		switch {
		case err != nil:
			return fmt.Errorf("%s: %s: %w", source, path.Join(NspawnDir, o.Nspawn.Path), err)
		case !ours(old):
			return fmt.Errorf("%s: %s exists and was not written by berth; not overwriting it",
				source, path.Join(NspawnDir, o.Nspawn.Path))
		case bytes.Equal(old, o.Nspawn.Content):
			// Unchanged: leave it, and its mtime, alone.
		default:
			if err := put(nfd, o.Nspawn.Path, o.Nspawn.Content); err != nil {
				return fmt.Errorf("write %s: %w", path.Join(NspawnDir, o.Nspawn.Path), err)
			}
		}
	} else if err := put(nfd, o.Nspawn.Path, o.Nspawn.Content); err != nil {
		return fmt.Errorf("write %s: %w", path.Join(NspawnDir, o.Nspawn.Path), err)
	}

	ofd, err := w.out.open()
	if err != nil {
		return err
	}
	if err := rawfile.MkdirAt(ofd, path.Dir(o.DropIn.Path), 0o755); err != nil && err != unix.EEXIST {
		return fmt.Errorf("create %s: %w", path.Join(w.cfg.OutDir, path.Dir(o.DropIn.Path)), err)
	}
	if err := put(ofd, o.DropIn.Path, o.DropIn.Content); err != nil {
		return fmt.Errorf("write %s: %w", path.Join(w.cfg.OutDir, o.DropIn.Path), err)
	}
	if o.WantsLink == "" {
		return nil
	}
	wfd, err := w.wants.open()
	if err != nil {
		return err
	}
	// A symlink is made whole or not at all; only one in the way (left
	// by an earlier run) needs the temporary name and rename.
	name := path.Base(o.WantsLink)
	err = rawfile.SymlinkAt(o.LinkTarget, wfd, name)
	if err == unix.EEXIST {
		tmp := tmpName(name)
		unix.Unlinkat(wfd, tmp, 0)
		if err = rawfile.SymlinkAt(o.LinkTarget, wfd, tmp); err == nil {
			if err = unix.Renameat(wfd, tmp, wfd, name); err != nil {
				unix.Unlinkat(wfd, tmp, 0)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("link %s: %w", path.Join(w.cfg.OutDir, o.WantsLink), err)
	}
	return nil
}

// tmpName is the temporary name of p, in p's directory: hidden, and with
// a suffix nothing of systemd's reads.
func tmpName(p string) string {
	dir, base := path.Split(p)
	return dir + "." + base + ".berth-tmp"
}

// put writes content to p below dirfd atomically, through a temporary
// name renamed. (A file made with O_TMPFILE and linked in costs more on
// tmpfs, where generators write.)
func put(dirfd int, p string, content []byte) error {
	tmp := tmpName(p)
	if err := rawfile.CreateAt(dirfd, tmp, content); err != nil {
		return err
	}
	if err := unix.Renameat(dirfd, tmp, dirfd, p); err != nil {
		unix.Unlinkat(dirfd, tmp, 0)
		return err
	}
	return nil
}

// ours reports whether a file's content is berth's: it starts with Header,
// or is a beginning of it (empty included), which only a run killed while
// writing it in place (before writes were atomic) leaves.
func ours(content []byte) bool {
	return bytes.HasPrefix(content, []byte(Header)) || strings.HasPrefix(Header, string(content))
}

// reconcile removes the .nspawn files berth wrote for machines this run did
// not generate. The generator directory needs none: systemd empties it
// before every run.
func (w *writer) reconcile(keep []string) error {
	kept := make(map[string]bool, len(keep))
	for _, n := range keep {
		kept[n] = true
	}
	var errs []error
	for name := range w.existing {
		if kept[name] {
			continue
		}
		p := filepath.Join(w.nspawn.path, name+".nspawn")
		if f, err := rawfile.ReadAt(rawfile.CWD, p); err != nil || !ours(f) {
			continue
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("remove stale %s: %w", path.Join(NspawnDir, name+".nspawn"), err))
		}
	}
	return errors.Join(errs...)
}
