package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Kinds of image.
const (
	KindMachine  = "machine"
	KindTemplate = "template"
)

// Record is what berth knows of one image, kept outside it. An image
// without a record, or whose record belongs to another tree, is a machine
// of unknown origin: what was imported, pulled or made by other tools.
type Record struct {
	Name string `json:"name"`
	// ID ties the record to one tree (see ID); a record whose tree is gone
	// is ignored, whichever tree now has the name.
	ID      string    `json:"id"`
	Kind    string    `json:"kind"`
	Created time.Time `json:"created"`
	// Origin is the template a machine was cloned from.
	Origin string `json:"origin,omitempty"`
	// Source is the archive or URL an image was imported or pulled from.
	Source string `json:"source,omitempty"`
	// Recipe and Packages are a template's, as package template has them.
	Recipe   json.RawMessage `json:"recipe,omitempty"`
	Packages []string        `json:"packages,omitempty"`
}

// maxRecord bounds what Store reads back: a template's package list is a
// few tens of KiB.
const maxRecord = 4 << 20

// Store keeps records as NAME.json in one directory that only berthd
// writes (Pool's .#berth/images).
type Store struct {
	Dir string
}

func (s *Store) dir() (*os.File, error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("records %s: %w", s.Dir, err)
	}
	return Open(s.Dir)
}

// Put writes r, replacing the record of the same name atomically.
func (s *Store) Put(r *Record) error {
	d, err := s.dir()
	if err != nil {
		return err
	}
	defer d.Close()
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAt(d, r.Name+".json", append(data, '\n'), 0o600)
}

// Get returns the record of name if it belongs to the tree f, else nil.
func (s *Store) Get(name string, f *os.File) *Record {
	r := s.read(name)
	if r == nil {
		return nil
	}
	if id, err := ID(f); err != nil || id != r.ID {
		return nil
	}
	return r
}

func (s *Store) read(name string) *Record {
	d, err := Open(s.Dir)
	if err != nil {
		return nil
	}
	defer d.Close()
	data, err := ReadFileAt(d, name+".json", maxRecord)
	if err != nil {
		return nil
	}
	var r Record
	if json.Unmarshal(data, &r) != nil || r.Name != name {
		return nil
	}
	return &r
}

// ByID returns the records there are, keyed by the ID of their trees.
func (s *Store) ByID() map[string]*Record {
	out := map[string]*Record{}
	d, err := Open(s.Dir)
	if err != nil {
		return out
	}
	defer d.Close()
	names, _ := readNames(d)
	for _, n := range names {
		if name, ok := strings.CutSuffix(n, ".json"); ok && !strings.HasPrefix(n, ".") {
			if r := s.read(name); r != nil {
				out[r.ID] = r
			}
		}
	}
	return out
}

// Delete forgets name.
func (s *Store) Delete(name string) error {
	err := os.Remove(s.Dir + "/" + name + ".json")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Rename moves the record of from to to, following an image's rename.
func (s *Store) Rename(from, to string) error {
	r := s.read(from)
	if r == nil {
		return s.Delete(to)
	}
	r.Name = to
	if err := s.Put(r); err != nil {
		return err
	}
	return s.Delete(from)
}

// WriteFileAt writes name in dir atomically: a temporary file, synced,
// renamed over name.
func WriteFileAt(dir *os.File, name string, data []byte, mode uint32) error {
	tmp := TempName(".#", name)
	fd, err := openat(int(dir.Fd()), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, mode)
	if err != nil {
		return &PathError{"create", join(dir.Name(), tmp), err}
	}
	f := os.NewFile(uintptr(fd), join(dir.Name(), tmp))
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(int(dir.Fd()), tmp, int(dir.Fd()), name)
	}
	if err != nil {
		unix.Unlinkat(int(dir.Fd()), tmp, 0)
		return &PathError{"write", join(dir.Name(), name), err}
	}
	return nil
}

// ErrTooLarge is returned by ReadFileAt for a file over its limit.
var ErrTooLarge = errors.New("file too large")

// ReadFileAt reads the regular file rel below dir, refusing symlinks,
// anything but a regular file (a FIFO would block, a device never end),
// and more than limit bytes.
func ReadFileAt(dir *os.File, rel string, limit int64) ([]byte, error) {
	fd, err := OpenAt(int(dir.Fd()), rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, &PathError{"open", join(dir.Name(), rel), err}
	}
	f := os.NewFile(uintptr(fd), join(dir.Name(), rel))
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &PathError{"stat", f.Name(), err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, &PathError{"read", f.Name(), errors.New("not a regular file")}
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, &PathError{"read", f.Name(), err}
	}
	if int64(len(data)) > limit {
		return nil, &PathError{"read", f.Name(), ErrTooLarge}
	}
	return data, nil
}
