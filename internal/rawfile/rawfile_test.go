package rawfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func openDir(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestReadAtAndCreateAtRoundTrip(t *testing.T) {
	dir := t.TempDir()
	dfd := openDir(t, dir)
	// Around the first buffer's size, and several times it.
	for _, size := range []int{0, 1, 1023, 1024, 1025, 70000} {
		want := bytes.Repeat([]byte{'x', 0, '\n'}, size/3+1)[:size]
		name := "f"
		if err := CreateAt(dfd, name, want); err != nil {
			t.Fatalf("CreateAt %d bytes: %v", size, err)
		}
		onDisk, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(onDisk, want) {
			t.Fatalf("%d bytes: file has %d bytes, err %v", size, len(onDisk), err)
		}
		got, err := ReadAt(dfd, name)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("ReadAt %d bytes: got %d bytes, err %v", size, len(got), err)
		}
	}
	// CreateAt truncates what was there (70000 bytes above).
	if err := CreateAt(dfd, "f", []byte("short")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "f")); string(got) != "short" {
		t.Fatalf("after rewrite: %q", got)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "f")); fi.Mode().Perm() != 0o644&^umask() {
		t.Fatalf("mode %v", fi.Mode())
	}
	// Relative to the working directory.
	t.Chdir(dir)
	if got, err := ReadAt(CWD, "f"); err != nil || string(got) != "short" {
		t.Fatalf("ReadAt(CWD): %q, %v", got, err)
	}
}

func umask() os.FileMode {
	m := unix.Umask(0)
	unix.Umask(m)
	return os.FileMode(m)
}

func TestErrorsAreErrnos(t *testing.T) {
	dir := t.TempDir()
	dfd := openDir(t, dir)
	if _, err := ReadAt(dfd, "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadAt missing: %v", err)
	}
	if err := CreateAt(dfd, "no/such/dir", nil); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("CreateAt below a missing dir: %v", err)
	}
	if err := MkdirAt(dfd, "d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAt(dfd, "d", 0o755); err != unix.EEXIST {
		t.Fatalf("MkdirAt twice: %v, want EEXIST", err)
	}
	if _, err := ReadAt(dfd, "d"); err != ErrNotRegular {
		t.Fatalf("ReadAt a directory: %v, want ErrNotRegular", err)
	}
	if err := SymlinkAt("/usr/lib/x", dfd, "l"); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "l")); err != nil || target != "/usr/lib/x" {
		t.Fatalf("link: %q, %v", target, err)
	}
	if err := SymlinkAt("/elsewhere", dfd, "l"); err != unix.EEXIST {
		t.Fatalf("SymlinkAt over a link: %v, want EEXIST", err)
	}
	if err := CreateAt(dfd, "nul\x00name", nil); err == nil {
		t.Fatal("a name with a NUL byte was accepted")
	}
}

// TestReadAtRefusesWhatIsNoFile: a FIFO (which would block the open and
// the read forever), a device and an oversized file are refused at once.
func TestReadAtRefusesWhatIsNoFile(t *testing.T) {
	dir := t.TempDir()
	dfd := openDir(t, dir)
	if err := unix.Mkfifo(filepath.Join(dir, "fifo.toml"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Symlink("/dev/zero", filepath.Join(dir, "zero.toml"))
	big, _ := os.Create(filepath.Join(dir, "big.toml"))
	big.Truncate(MaxRead + 1)
	big.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for name, want := range map[string]error{"fifo.toml": ErrNotRegular, "zero.toml": ErrNotRegular, "big.toml": ErrTooLarge} {
			if _, err := ReadAt(dfd, name); err != want {
				t.Errorf("ReadAt %s: %v, want %v", name, err, want)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ReadAt blocked")
	}
}
