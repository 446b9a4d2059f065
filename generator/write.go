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

// write puts o in place: the .nspawn file atomically when it replaces one
// (systemd-nspawn may read it at any time), the drop-in and link directly
// (systemd reads the generator directory only after we exit).
func (w *writer) write(source string, o *Output) error {
	nfd, err := w.nspawn.open()
	if err != nil {
		return err
	}
	if w.existing[o.Name] {
		old, err := os.ReadFile(filepath.Join(w.nspawn.path, o.Nspawn.Path))
		switch {
		case err != nil:
			return fmt.Errorf("%s: %w", source, err)
		case !bytes.HasPrefix(old, []byte(Header)):
			return fmt.Errorf("%s: %s exists and was not written by berth; not overwriting it",
				source, path.Join(NspawnDir, o.Nspawn.Path))
		case bytes.Equal(old, o.Nspawn.Content):
			// Unchanged: leave it, and its mtime, alone.
		default:
			tmp := "." + o.Nspawn.Path + ".berth-tmp"
			if err := rawfile.CreateAt(nfd, tmp, o.Nspawn.Content); err != nil {
				return fmt.Errorf("write %s: %w", path.Join(NspawnDir, tmp), err)
			}
			if err := unix.Renameat(nfd, tmp, nfd, o.Nspawn.Path); err != nil {
				unix.Unlinkat(nfd, tmp, 0)
				return fmt.Errorf("replace %s: %w", path.Join(NspawnDir, o.Nspawn.Path), err)
			}
		}
	} else if err := rawfile.CreateAt(nfd, o.Nspawn.Path, o.Nspawn.Content); err != nil {
		// A new file needs no temporary name: no unit for this machine
		// existed before this run, so nothing can be reading it yet.
		return fmt.Errorf("write %s: %w", path.Join(NspawnDir, o.Nspawn.Path), err)
	}

	ofd, err := w.out.open()
	if err != nil {
		return err
	}
	if err := rawfile.MkdirAt(ofd, path.Dir(o.DropIn.Path), 0o755); err != nil && err != unix.EEXIST {
		return fmt.Errorf("create %s: %w", path.Join(w.cfg.OutDir, path.Dir(o.DropIn.Path)), err)
	}
	if err := rawfile.CreateAt(ofd, o.DropIn.Path, o.DropIn.Content); err != nil {
		return fmt.Errorf("write %s: %w", path.Join(w.cfg.OutDir, o.DropIn.Path), err)
	}
	if o.WantsLink == "" {
		return nil
	}
	wfd, err := w.wants.open()
	if err != nil {
		return err
	}
	name := path.Base(o.WantsLink)
	err = rawfile.SymlinkAt(o.LinkTarget, wfd, name)
	if err == unix.EEXIST {
		if err = unix.Unlinkat(wfd, name, 0); err == nil {
			err = rawfile.SymlinkAt(o.LinkTarget, wfd, name)
		}
	}
	if err != nil {
		return fmt.Errorf("link %s: %w", path.Join(w.cfg.OutDir, o.WantsLink), err)
	}
	return nil
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
		if f, err := os.ReadFile(p); err != nil || !bytes.HasPrefix(f, []byte(Header)) {
			continue
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("remove stale %s: %w", path.Join(NspawnDir, name+".nspawn"), err))
		}
	}
	return errors.Join(errs...)
}
