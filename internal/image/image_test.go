package image_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/image"
)

func open(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := image.OpenTree(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The host is a directory outside the image that the image's symlinks
// name; nothing berth does inside the image may touch it.
func hostAndImage(t *testing.T) (host, img string) {
	dir := t.TempDir()
	host, img = filepath.Join(dir, "host"), filepath.Join(dir, "img")
	write(t, filepath.Join(host, "machine-id"), "host-id\n")
	write(t, filepath.Join(host, "hostname"), "host\n")
	if err := os.MkdirAll(img, 0o755); err != nil {
		t.Fatal(err)
	}
	return host, img
}

func TestResetIdentity(t *testing.T) {
	host, img := hostAndImage(t)
	write(t, filepath.Join(img, "etc/machine-id"), "0123\n")
	write(t, filepath.Join(img, "etc/hostname"), "tmpl\n")
	if err := image.ResetIdentity(open(t, img)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(img, "etc/machine-id"))
	if err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o444 {
		t.Errorf("machine-id after reset: %v, %v; want empty, 0444", fi, err)
	}
	if _, err := os.Lstat(filepath.Join(img, "etc/hostname")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("hostname still there: %v", err)
	}
	_ = host
}

// TestHasIdentity: true wherever ResetIdentity would write, false only
// for a tree that holds exactly what it leaves.
func TestHasIdentity(t *testing.T) {
	host, img := hostAndImage(t)
	root := open(t, img)
	if image.HasIdentity(root) {
		t.Error("a tree without etc has an identity")
	}
	write(t, filepath.Join(img, "etc/machine-id"), "0123\n")
	if !image.HasIdentity(root) {
		t.Error("a machine-id with content is no identity")
	}
	if err := image.ResetIdentity(root); err != nil {
		t.Fatal(err)
	}
	if image.HasIdentity(root) {
		t.Error("identity left after ResetIdentity")
	}
	write(t, filepath.Join(img, "etc/hostname"), "x\n")
	if !image.HasIdentity(root) {
		t.Error("a hostname is no identity")
	}
	os.Remove(filepath.Join(img, "etc/hostname"))
	os.Remove(filepath.Join(img, "etc/machine-id"))
	os.Symlink(filepath.Join(host, "empty"), filepath.Join(img, "etc/machine-id"))
	write(t, filepath.Join(host, "empty"), "")
	if !image.HasIdentity(root) {
		t.Error("a symlinked machine-id is no identity")
	}
	_, img2 := hostAndImage(t)
	os.Symlink(host, filepath.Join(img2, "etc"))
	if !image.HasIdentity(open(t, img2)) {
		t.Error("a symlinked etc is no identity")
	}
}

func TestResetIdentityThroughSymlinks(t *testing.T) {
	host, img := hostAndImage(t)
	// The files themselves are symlinks to host files: they are replaced.
	os.MkdirAll(filepath.Join(img, "etc"), 0o755)
	os.Symlink(filepath.Join(host, "machine-id"), filepath.Join(img, "etc/machine-id"))
	os.Symlink(filepath.Join(host, "hostname"), filepath.Join(img, "etc/hostname"))
	if err := image.ResetIdentity(open(t, img)); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(host, "machine-id")); got != "host-id\n" {
		t.Errorf("host machine-id = %q", got)
	}
	if got := read(t, filepath.Join(host, "hostname")); got != "host\n" {
		t.Errorf("host hostname = %q", got)
	}
	if fi, err := os.Lstat(filepath.Join(img, "etc/machine-id")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("image machine-id is %v, %v; want a regular file", fi, err)
	}

	// etc itself is a symlink to the host: refused, host untouched.
	_, img2 := hostAndImage(t)
	os.Symlink(host, filepath.Join(img2, "etc"))
	err := image.ResetIdentity(open(t, img2))
	if !errors.Is(err, image.ErrSymlink) {
		t.Errorf("reset through a symlinked etc = %v; want ErrSymlink", err)
	}
	if got := read(t, filepath.Join(host, "machine-id")); got != "host-id\n" {
		t.Errorf("host machine-id = %q after reset through symlinked etc", got)
	}
	if _, err := os.Stat(filepath.Join(host, "hostname")); err != nil {
		t.Errorf("host hostname gone: %v", err)
	}
}

func TestOpenAtRefusesSymlinks(t *testing.T) {
	host, img := hostAndImage(t)
	os.MkdirAll(filepath.Join(img, "usr/lib"), 0o755)
	os.Symlink(host, filepath.Join(img, "usr/lib/berth"))
	os.Symlink(filepath.Join(host, "hostname"), filepath.Join(img, "usr/name"))
	write(t, filepath.Join(img, "usr/lib/real"), "ok")
	root := open(t, img)
	for _, rel := range []string{"usr/lib/berth/hostname", "usr/name", "../host/hostname", "/etc/passwd"} {
		if _, err := image.ReadFileAt(root, rel, 1<<20); err == nil {
			t.Errorf("ReadFileAt(%q) succeeded", rel)
		}
	}
	if got, err := image.ReadFileAt(root, "usr/lib/real", 1<<20); err != nil || string(got) != "ok" {
		t.Errorf("ReadFileAt(usr/lib/real) = %q, %v", got, err)
	}
}

func TestReadFileAtBounds(t *testing.T) {
	_, img := hostAndImage(t)
	if err := syscall.Mkfifo(filepath.Join(img, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(img, "big"), strings.Repeat("x", 4097))
	os.Symlink("/dev/zero", filepath.Join(img, "zero"))
	root := open(t, img)
	// A FIFO would block every reader, /dev/zero never end.
	if _, err := image.ReadFileAt(root, "fifo", 1<<20); err == nil {
		t.Error("read a FIFO")
	}
	if _, err := image.ReadFileAt(root, "zero", 1<<20); err == nil {
		t.Error("read /dev/zero through a symlink")
	}
	if _, err := image.ReadFileAt(root, "big", 4096); !errors.Is(err, image.ErrTooLarge) {
		t.Errorf("4097 bytes with a 4096 limit: %v; want ErrTooLarge", err)
	}
	if b, err := image.ReadFileAt(root, "big", 4097); err != nil || len(b) != 4097 {
		t.Errorf("4097 bytes with a 4097 limit: %d, %v", len(b), err)
	}
}

func TestWalkStaysInside(t *testing.T) {
	host, img := hostAndImage(t)
	write(t, filepath.Join(img, "a/b/file"), "12345")
	os.Symlink(host, filepath.Join(img, "a/out"))
	var seen []string
	err := image.Walk(open(t, img), func(e *image.Entry) error {
		seen = append(seen, e.Path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := ".,a,a/b,a/b/file,a/out"
	if got := strings.Join(seen, ","); got != want {
		t.Errorf("walk = %s; want %s", got, want)
	}
	if size, files := image.Usage(open(t, img)); size != 5 || files != 1 {
		t.Errorf("Usage = %d, %d; want 5, 1 (host files not counted)", size, files)
	}
}

func TestWalkDepthCap(t *testing.T) {
	_, img := hostAndImage(t)
	d, err := unix.Open(img, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Deeper than any path could name: built one level at a time.
	for i := 0; i <= image.MaxDepth; i++ {
		if err := unix.Mkdirat(d, "d", 0o755); err != nil {
			t.Fatal(err)
		}
		nd, err := unix.Openat(d, "d", unix.O_DIRECTORY|unix.O_RDONLY, 0)
		unix.Close(d)
		if err != nil {
			t.Fatal(err)
		}
		d = nd
	}
	unix.Close(d)
	err = image.Walk(open(t, img), func(*image.Entry) error { return nil })
	if !errors.Is(err, image.ErrTooDeep) {
		t.Errorf("walk of %d levels = %v; want ErrTooDeep", image.MaxDepth+1, err)
	}
	// Remove it the same way as berth does.
	parent := open(t, filepath.Dir(img))
	if err := image.DeleteTree(parent, filepath.Base(img)); err != nil {
		t.Errorf("DeleteTree of a deep tree: %v", err)
	}
}

func TestDeleteTreeKeepsHost(t *testing.T) {
	host, img := hostAndImage(t)
	write(t, filepath.Join(img, "a/file"), "x")
	os.Symlink(host, filepath.Join(img, "a/out"))
	os.Symlink(filepath.Join(host, "hostname"), filepath.Join(img, "hostname"))
	if err := image.DeleteTree(open(t, filepath.Dir(img)), filepath.Base(img)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(img); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("image still there: %v", err)
	}
	for _, f := range []string{"machine-id", "hostname"} {
		if _, err := os.Stat(filepath.Join(host, f)); err != nil {
			t.Errorf("host %s: %v", f, err)
		}
	}
}

func TestRemoveMatching(t *testing.T) {
	host, img := hostAndImage(t)
	write(t, filepath.Join(img, "var/lib/apt/lists/deb_Packages"), "x")
	write(t, filepath.Join(img, "var/lib/apt/lists/lock"), "")
	os.MkdirAll(filepath.Join(img, "var/cache"), 0o755)
	os.Symlink(host, filepath.Join(img, "var/cache/apt"))
	write(t, filepath.Join(host, "x.bin"), "")
	root := open(t, img)
	if err := image.RemoveMatching(root, "var/lib/apt/lists/*_*"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(img, "var/lib/apt/lists/deb_Packages")); !errors.Is(err, os.ErrNotExist) {
		t.Error("list not removed")
	}
	if _, err := os.Stat(filepath.Join(img, "var/lib/apt/lists/lock")); err != nil {
		t.Error("lock removed")
	}
	if err := image.RemoveMatching(root, "var/cache/apt/*.bin"); !errors.Is(err, image.ErrSymlink) {
		t.Errorf("through a symlinked directory: %v; want ErrSymlink", err)
	}
	if _, err := os.Stat(filepath.Join(host, "x.bin")); err != nil {
		t.Errorf("host file removed: %v", err)
	}
}
