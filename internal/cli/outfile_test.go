package cli

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNoArchiveToATerminal: "berth export NAME -" refuses a terminal as
// standard output (a pseudo-terminal here) before it asks berthd anything.
func TestNoArchiveToATerminal(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile(filepath.Join("/dev/pts", strconv.Itoa(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	if _, err := createArchive(&env{stdout: tty, stderr: os.Stderr}, "-", false); err == nil || !strings.Contains(err.Error(), "terminal") {
		t.Errorf("export to a terminal: %v", err)
	}
	// A pipe is fine.
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	if o, err := createArchive(&env{stdout: w, stderr: os.Stderr}, "-", false); err != nil || o.f != w {
		t.Errorf("export to a pipe: %v", err)
	}
}
