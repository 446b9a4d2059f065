package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/varlinkd/ioberthmachine"
)

// outFile is an archive being written for the caller: a file without a
// name (O_TMPFILE) in the target's directory that gets its name only once
// complete, so an export that fails or is killed leaves nothing; or a
// hidden temporary name where the file system has no O_TMPFILE; or
// standard output.
type outFile struct {
	f     *os.File
	path  string // "" for standard output
	tmp   string // the temporary name, if the file has one
	force bool
	done  bool
}

func createArchive(e *env, path string, force bool) (*outFile, error) {
	if path == "-" {
		out, ok := e.stdout.(*os.File)
		if !ok || isTerminal(out) {
			return nil, errors.New("refusing to write an archive to a terminal; name a file or redirect standard output")
		}
		return &outFile{f: out}, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	o := &outFile{path: abs, force: force}
	if _, err := os.Lstat(abs); err == nil && !force {
		return nil, &ioberthmachine.ArchiveExists{Path: abs}
	}
	dir := filepath.Dir(abs)
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err == nil {
		o.f = os.NewFile(uintptr(fd), abs)
		return o, nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) {
		return nil, fmt.Errorf("create %s: %w", abs, err)
	}
	f, err := os.CreateTemp(dir, ".#berth-"+filepath.Base(abs)+"-*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", abs, err)
	}
	o.f, o.tmp = f, f.Name()
	return o, nil
}

// commit gives the complete archive its name; an existing file there (or
// a symlink, replaced, never followed) only with force.
func (o *outFile) commit() error {
	if o.path == "" {
		return nil
	}
	if o.tmp == "" {
		// linkat of /proc/self/fd/N names the unnamed file; it never
		// replaces, so --force links to a temporary name and renames.
		o.tmp = o.path
		if o.force {
			o.tmp = filepath.Join(filepath.Dir(o.path), ".#berth-"+filepath.Base(o.path)+"-"+strconv.Itoa(os.Getpid()))
		}
		err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(o.f.Fd())), unix.AT_FDCWD, o.tmp, unix.AT_SYMLINK_FOLLOW)
		if errors.Is(err, unix.EEXIST) && !o.force {
			o.tmp = ""
			return &ioberthmachine.ArchiveExists{Path: o.path}
		} else if err != nil {
			o.tmp = ""
			return fmt.Errorf("name %s: %w", o.path, err)
		}
		if !o.force {
			o.tmp, o.done = "", true
			return nil
		}
	}
	flags := uint(unix.RENAME_NOREPLACE)
	if o.force {
		flags = 0
	}
	if err := unix.Renameat2(unix.AT_FDCWD, o.tmp, unix.AT_FDCWD, o.path, flags); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return &ioberthmachine.ArchiveExists{Path: o.path}
		}
		return fmt.Errorf("name %s: %w", o.path, err)
	}
	o.tmp, o.done = "", true
	return nil
}

// discard removes what an unfinished export left and closes the file.
func (o *outFile) discard() {
	if o.tmp != "" && !o.done {
		os.Remove(o.tmp)
	}
	if o.path != "" {
		o.f.Close()
	}
}
