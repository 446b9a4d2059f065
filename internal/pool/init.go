package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/coreos/go-systemd/v22/unit"
	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/image"
)

// UnitDir is where Init writes the pool's mount unit: an admin's unit.
const UnitDir = "/etc/systemd/system"

// Init makes the pool a loopback btrfs: a sparse image of size bytes,
// formatted, mounted on the pool by a mount unit that is enabled for boot.
// The pool must be empty and not on btrfs already. Anything Init made is
// removed again if a later step fails. It runs alone: a pull or clone that
// wrote into the directory meanwhile would end up hidden under the mount.
// Once it succeeds, nothing else may start in this process, which does not
// see the new mount in its own namespace for sure and exits to see it.
func (p *Pool) Init(ctx context.Context, size int64, image string) (unitName string, err error) {
	release, err := p.LockAlone(initPool)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	if p.Btrfs() {
		return "", fmt.Errorf("%s is already on btrfs", p.Dir)
	}
	var st, parent unix.Stat_t
	if unix.Stat(p.Dir, &st) == nil && unix.Stat(filepath.Dir(p.Dir), &parent) == nil && st.Dev != parent.Dev {
		return "", fmt.Errorf("%s is a mount point of another file system; unmount it first", p.Dir)
	}
	if err := p.emptyForInit(); err != nil {
		return "", err
	}
	if size < 256<<20 {
		return "", fmt.Errorf("size %d is too small for a btrfs pool (at least 256M)", size)
	}
	if image == "" {
		image = strings.TrimRight(p.Dir, "/") + ".raw"
	}
	if err := checkUnitPath(image); err != nil {
		return "", fmt.Errorf("image %q: %w", image, err)
	}
	if err := checkUnitPath(p.Dir); err != nil {
		return "", fmt.Errorf("pool %q: %w", p.Dir, err)
	}
	if _, err := os.Lstat(image); err == nil {
		return "", fmt.Errorf("%s already exists", image)
	}
	unitName = unit.UnitNamePathEscape(p.Dir) + ".mount"
	unitPath := filepath.Join(UnitDir, unitName)
	if _, err := os.Lstat(unitPath); err == nil {
		return "", fmt.Errorf("%s already exists", unitPath)
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	// Empty directories only, which would lie hidden under the mount.
	if err := os.RemoveAll(p.StateDir()); err != nil {
		return "", fmt.Errorf("remove %s: %w", p.StateDir(), err)
	}
	// truncate -s SIZE IMAGE; mkfs.btrfs IMAGE
	f, err := os.OpenFile(image, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", image, err)
	}
	undo = append(undo, func() { os.Remove(image) })
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("size %s: %w", image, err)
	}
	if out, err := exec.CommandContext(ctx, "mkfs.btrfs", "-q", "-L", "berth-pool", image).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkfs.btrfs %s: %w: %s", image, err, strings.TrimSpace(string(out)))
	}

	content, err := io.ReadAll(unit.Serialize([]*unit.UnitOption{
		unit.NewUnitOption("Unit", "Description", "berth machine pool "+unitEscape(p.Dir)),
		unit.NewUnitOption("Mount", "What", unitEscape(image)),
		unit.NewUnitOption("Mount", "Where", unitEscape(p.Dir)),
		unit.NewUnitOption("Mount", "Type", "btrfs"),
		unit.NewUnitOption("Mount", "Options", "loop"),
		unit.NewUnitOption("Install", "WantedBy", "local-fs.target"),
	}))
	if err != nil {
		return "", err
	}
	content = append([]byte("# Written by berth pool init.\n"), content...)
	if err := os.WriteFile(unitPath, content, 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", unitPath, err)
	}
	undo = append(undo, func() { os.Remove(unitPath) })

	conn, err := sddbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return "", fmt.Errorf("connect to systemd: %w", err)
	}
	defer conn.Close()
	if err := conn.ReloadContext(ctx); err != nil {
		return "", fmt.Errorf("daemon-reload: %w", err)
	}
	// systemctl enable --now UNIT
	if _, _, err := conn.EnableUnitFilesContext(ctx, []string{unitName}, false, true); err != nil {
		return "", fmt.Errorf("enable %s: %w", unitName, err)
	}
	undo = append(undo, func() { conn.DisableUnitFilesContext(context.Background(), []string{unitName}, false) })
	done := make(chan string, 1)
	if _, err := conn.StartUnitContext(ctx, unitName, "replace", done); err != nil {
		return "", fmt.Errorf("start %s: %w", unitName, err)
	}
	if res := <-done; res != "done" {
		return "", fmt.Errorf("start %s: %s (see journalctl -u %s)", unitName, res, unitName)
	}
	// Look with PID 1's eyes: berthd's own mount namespace may only see
	// the new mount once it is restarted.
	if fstype := hostFSType(p.Dir); fstype != "btrfs" {
		return "", fmt.Errorf("%s mounted %q, not btrfs, on %s", unitName, fstype, p.Dir)
	}
	// The new file system's root is 0755; see Restrict.
	if _, err := restrict(filepath.Join("/proc/1/root", p.Dir)); err != nil {
		return "", err
	}
	return unitName, nil
}

// emptyForInit refuses a pool that holds anything but a state directory
// without files (left by images since removed).
func (p *Pool) emptyForInit() error {
	ents, err := os.ReadDir(p.Dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("list %s: %w", p.Dir, err)
	}
	n := 0
	for _, e := range ents {
		if e.Name() != StateName {
			n++
		}
	}
	if n > 0 {
		return fmt.Errorf("%s is not empty (%d entries); move its images elsewhere first", p.Dir, n)
	}
	state, err := image.OpenTree(p.StateDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer state.Close()
	var held []string
	err = image.Walk(state, func(e *image.Entry) error {
		if e.Stat.Mode&unix.S_IFMT != unix.S_IFDIR && len(held) < 3 {
			held = append(held, e.Path)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("look into %s: %w", p.StateDir(), err)
	}
	if len(held) > 0 {
		return fmt.Errorf("%s still holds berth's data (%s); remove it first", p.StateDir(), strings.Join(held, ", "))
	}
	return nil
}

// checkUnitPath refuses what cannot stand in a unit file as a path:
// relative or unclean paths and control characters (a newline would add a
// line to a unit of root's). Specifiers are escaped by unitEscape.
func checkUnitPath(path string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return errors.New("not an absolute, clean path")
	}
	for _, r := range path {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return fmt.Errorf("holds %q, which a unit file cannot take in a path", r)
		}
	}
	return nil
}

// unitEscape escapes systemd's specifiers in a unit-file value.
func unitEscape(s string) string { return strings.ReplaceAll(s, "%", "%%") }

// hostFSType is the type of the file system mounted on dir in PID 1's
// mount namespace, or "".
func hostFSType(dir string) string {
	data, err := os.ReadFile("/proc/1/mountinfo")
	if err != nil {
		return ""
	}
	fstype := ""
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || unescapeMount(f[4]) != dir {
			continue
		}
		for i := 6; i < len(f)-1; i++ {
			if f[i] == "-" {
				fstype = f[i+1] // the last mount on dir is the visible one
			}
		}
	}
	return fstype
}

// Image returns the loopback image backing the pool, or "".
func (p *Pool) Image() string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	dev := ""
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS] - FSTYPE SOURCE SUPER
		if len(f) < 10 || unescapeMount(f[4]) != p.Dir {
			continue
		}
		for i := 6; i < len(f)-2; i++ {
			if f[i] == "-" {
				dev = f[i+2]
			}
		}
	}
	loop, ok := strings.CutPrefix(dev, "/dev/")
	if !ok || !strings.HasPrefix(loop, "loop") {
		return ""
	}
	b, err := os.ReadFile(filepath.Join("/sys/block", loop, "loop/backing_file"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
