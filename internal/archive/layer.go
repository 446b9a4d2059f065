package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// OCI image layers delete what lower layers made with whiteout entries
// (image-spec, "Whiteouts"): an empty file .wh.NAME deletes NAME beside
// it, and .wh..wh..opq deletes everything its directory held before
// this layer.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// layer is what Extract keeps to apply one layer over the layers below.
type layer struct {
	// fresh is a target that was empty: only this layer's own entries can
	// be in the way, and no lookup is needed for the rest.
	fresh bool
	// made are the entries of this layer so far, which an opaque marker
	// later in the stream must leave alone.
	made map[string]bool
	// removed is Extract's count of removed trees, which tells the
	// directory caches to start again.
	removed *atomic.Uint64
}

func newLayer(root *os.Root, removed *atomic.Uint64) (*layer, error) {
	d, err := root.Open(".")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return &layer{fresh: len(names) == 0, made: map[string]bool{}, removed: removed}, nil
}

// apply handles entry name of the layer before Extract makes it: it
// applies a whiteout (done: nothing more to make) or clears the way.
// dirs is Extract's set of directories known to exist, kept true.
func (l *layer) apply(root *os.Root, name string, hdr *tar.Header, w *writers, dirs map[string]bool) (done bool, err error) {
	dir, base := path.Split(name)
	dir = path.Clean(dir)
	if strings.HasPrefix(base, whiteoutPrefix) {
		if hdr.Typeflag == tar.TypeDir {
			return false, unsafeEntry(hdr.Name, "a whiteout that is a directory")
		}
		// Queued writes may be below what goes.
		if err := w.wait(); err != nil {
			return false, err
		}
		if base == opaqueMarker {
			return true, l.opaque(root, dir, dirs)
		}
		gone := strings.TrimPrefix(base, whiteoutPrefix)
		if gone == "" || gone == "." || gone == ".." || strings.HasPrefix(gone, whiteoutPrefix) {
			// ".." would reach out of its directory; .wh..wh. is reserved.
			return false, unsafeEntry(hdr.Name, "a whiteout that names no entry beside it")
		}
		return true, l.remove(root, path.Join(dir, gone), dirs)
	}
	if l.fresh && !l.made[name] {
		l.made[name] = true
		return false, nil
	}
	if l.made[name] {
		// Named twice in this layer: the first may still be queued.
		if err := w.wait(); err != nil {
			return false, err
		}
	}
	l.made[name] = true
	fi, err := root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("%s: %w", name, err)
	case fi.IsDir() && hdr.Typeflag == tar.TypeDir:
		return false, nil // a directory's entries merge with the one below
	}
	// Queued writes may be below what goes.
	if err := w.wait(); err != nil {
		return false, err
	}
	return false, l.remove(root, name, dirs)
}

// remove deletes name and everything below it, never following a
// symlink.
func (l *layer) remove(root *os.Root, name string, dirs map[string]bool) error {
	if name == "." {
		return unsafeEntry(name, "a whiteout of the whole image")
	}
	l.removed.Add(1) // before: the writers are idle now, the main loop is here
	if err := root.RemoveAll(name); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	delete(dirs, name)
	return nil
}

// opaque empties dir of what lower layers put there.
func (l *layer) opaque(root *os.Root, dir string, dirs map[string]bool) error {
	d, err := root.OpenFile(dir, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	for _, n := range names {
		if p := path.Join(dir, n); !l.made[p] {
			if err := l.remove(root, p, dirs); err != nil {
				return err
			}
		}
	}
	return nil
}
