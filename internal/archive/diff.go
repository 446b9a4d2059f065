package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/image"
)

// WriteDiff writes what tree changed against base, the tree it was
// snapshotted from, as an OCI image layer (image-spec "Changesets"):
// entries that are new or changed, and a whiteout .wh.NAME for each
// entry of base that tree no longer has. A btrfs snapshot keeps inode
// numbers and change times, so an entry whose inode, ctime, mtime, size,
// mode and owner are those of base's entry at the same path is unchanged
// (every write, chmod, chown or xattr change moves its ctime); a
// directory whose own ctime did not move had nothing added or removed.
// base is read one component at a time without following symlinks.
func WriteDiff(ctx context.Context, base, tree *os.File, w io.Writer, o Options) error {
	out := newTarOut(w, &o)
	err := image.Walk(tree, func(e *image.Entry) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		bst, err := statBeneath(base, e.Path)
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, image.ErrSymlink) {
			return fmt.Errorf("%s in the base: %w", e.Path, err)
		}
		inBase := err == nil
		if inBase && unchanged(&e.Stat, bst) {
			return nil // and a directory's entries are looked at one by one
		}
		if err := out.add(ctx, e); err != nil {
			return err
		}
		if inBase && isDir(&e.Stat) && isDir(bst) {
			return whiteouts(out.tw, base, tree, e)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return out.close()
}

func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

func unchanged(a, b *unix.Stat_t) bool {
	return a.Ino == b.Ino && a.Ctim == b.Ctim && a.Mtim == b.Mtim && a.Size == b.Size &&
		a.Mode == b.Mode && a.Uid == b.Uid && a.Gid == b.Gid && a.Rdev == b.Rdev
}

// statBeneath stats rel below dir without following a symlink anywhere.
func statBeneath(dir *os.File, rel string) (*unix.Stat_t, error) {
	fd, err := image.OpenAt(int(dir.Fd()), rel, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// whiteouts writes .wh.NAME for every entry of base's directory at e.Path
// that tree's no longer has.
func whiteouts(tw *tar.Writer, base, tree *os.File, e *image.Entry) error {
	names := func(root *os.File) ([]string, error) {
		d, err := image.OpenDir(root, e.Path)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		return d.Readdirnames(-1)
	}
	had, err := names(base)
	if err != nil {
		return err
	}
	has, err := names(tree)
	if err != nil {
		return err
	}
	kept := make(map[string]bool, len(has))
	for _, n := range has {
		kept[n] = true
	}
	slices.Sort(had)
	for _, n := range had {
		if kept[n] {
			continue
		}
		hdr := &tar.Header{Name: "./" + path.Join(e.Path, whiteoutPrefix+n), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	return nil
}
