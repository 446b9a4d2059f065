package template

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Progress is one step of a long operation.
type Progress struct {
	Phase   string
	Percent int
	Message string
}

// BootstrapError is a failed bootstrapper or package install, with the
// last lines it printed.
type BootstrapError struct {
	Tool   string
	Status int
	Log    []string
}

func (e *BootstrapError) Error() string {
	return fmt.Sprintf("%s failed (exit status %d): %s", e.Tool, e.Status, strings.Join(e.Log, " | "))
}

const logTail = 15

// phaseTable turns a bootstrapper's "I:" lines into progress, as
// percentages of the bootstrap step.
type phaseTable []struct {
	prefix string
	phase  string
	pct    int
}

func (t phaseTable) match(line string) (string, int, bool) {
	for _, p := range t {
		if strings.HasPrefix(line, p.prefix) {
			return p.phase, p.pct, true
		}
	}
	return "", 0, false
}

var mmdebstrapPhases = phaseTable{
	{"I: running apt-get update", "download", 5},
	{"I: downloading packages", "download", 15},
	{"I: extracting archives", "bootstrap", 35},
	{"I: installing essential packages", "bootstrap", 45},
	{"I: installing remaining packages", "install", 70},
	{"I: cleaning package lists", "finish", 90},
}

var debootstrapPhases = phaseTable{
	{"I: Retrieving Release", "download", 5},
	{"I: Retrieving Packages", "download", 10},
	{"I: Retrieving", "download", 20},
	{"I: Extracting", "bootstrap", 40},
	{"I: Installing core packages", "bootstrap", 50},
	{"I: Unpacking required packages", "bootstrap", 60},
	{"I: Configuring required packages", "install", 70},
	{"I: Base system installed successfully", "finish", 95},
}

// bootstrap runs the recipe's bootstrapper into target (an empty tree),
// with debCache bound to the tree's apt archive so packages are
// downloaded once per suite and architecture. It reports progress scaled
// into [lo, hi].
func bootstrap(ctx context.Context, r *Recipe, target, debCache string, lo, hi int, report func(Progress)) error {
	var args []string
	var phases phaseTable
	switch r.Bootstrapper {
	case "mmdebstrap":
		archives := `"$1"/var/cache/apt/archives`
		args = []string{"mmdebstrap", "--mode=root", "--format=directory",
			"--variant=" + r.Variant,
			"--architectures=" + r.Architecture,
			"--components=" + strings.Join(r.Components, ","),
			// Keep what is downloaded: the cache is bound over the archive
			// directory for the whole build and unmounted before cleanup.
			"--skip=essential/unlink", "--skip=download/empty",
			// Keep the package lists in the base: templates made from it
			// install their packages without an apt-get update.
			"--skip=cleanup/apt/lists",
			"--setup-hook=mkdir -p " + archives + " && mount --bind " + shellQuote(debCache) + " " + archives,
			"--customize-hook=umount " + archives,
		}
		if len(r.Include) > 0 {
			args = append(args, "--include="+strings.Join(r.Include, ","))
		}
		args = append(args, r.Suite, target, r.Mirror)
		phases = mmdebstrapPhases
	case "debootstrap":
		args = []string{"debootstrap", "--variant=" + r.Variant, "--arch=" + r.Architecture,
			"--components=" + strings.Join(r.Components, ","), "--cache-dir=" + debCache}
		if len(r.Include) > 0 {
			args = append(args, "--include="+strings.Join(r.Include, ","))
		}
		args = append(args, r.Suite, target, r.Mirror)
		phases = debootstrapPhases
	}
	return run(ctx, r.Bootstrapper, args, nil, func(line string) {
		if phase, pct, ok := phases.match(line); ok {
			report(Progress{Phase: phase, Percent: lo + (hi-lo)*pct/100, Message: strings.TrimPrefix(line, "I: ")})
		}
	})
}

// installPackages adds pkgs to the tree at root with the tree's own apt,
// in a chroot with /proc, /dev and the package cache mounted. It runs
// apt-get update first when the tree's package lists are older than a day.
func installPackages(ctx context.Context, root, debCache string, pkgs []string, lo, hi int, report func(Progress)) (err error) {
	mounts := []struct{ src, dst, fstype string }{
		{"proc", "proc", "proc"},
		{"/dev", "dev", ""},
		{"/dev/pts", "dev/pts", ""},
		{debCache, "var/cache/apt/archives", ""},
	}
	var mounted []string
	defer func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			if uerr := unix.Unmount(mounted[i], unix.MNT_DETACH); uerr != nil && err == nil {
				err = fmt.Errorf("unmount %s: %w", mounted[i], uerr)
			}
		}
	}()
	for _, m := range mounts {
		dst := filepath.Join(root, m.dst)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		flags := uintptr(unix.MS_BIND)
		if m.fstype != "" {
			flags = 0
		}
		if err := unix.Mount(m.src, dst, m.fstype, flags, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.src, dst, err)
		}
		mounted = append(mounted, dst)
	}
	// Name resolution for apt: the host's resolv.conf, for the build only.
	resolv := filepath.Join(root, "etc/resolv.conf")
	if data, rerr := os.ReadFile("/etc/resolv.conf"); rerr == nil {
		old, oldErr := os.ReadFile(resolv)
		os.Remove(resolv)
		if werr := os.WriteFile(resolv, data, 0o644); werr == nil {
			defer func() {
				os.Remove(resolv)
				if oldErr == nil {
					os.WriteFile(resolv, old, 0o644)
				}
			}()
		}
	}
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8"}
	chroot := []string{"chroot", root}
	if fi, serr := os.Stat(filepath.Join(root, "var/lib/apt/lists")); serr != nil || time.Since(fi.ModTime()) > 24*time.Hour || emptyLists(root) {
		report(Progress{Phase: "download", Percent: lo, Message: "updating package lists"})
		if err := run(ctx, "apt-get update", append(chroot, "apt-get", "-q", "update"), env, func(string) {}); err != nil {
			return err
		}
	}
	report(Progress{Phase: "install", Percent: lo + (hi-lo)/4, Message: "installing " + strings.Join(pkgs, ", ")})
	args := append(chroot, "apt-get", "-q", "-y", "--no-install-recommends",
		"-o", "APT::Keep-Downloaded-Packages=true", "install")
	return run(ctx, "apt-get install", append(args, pkgs...), env, func(line string) {
		if strings.HasPrefix(line, "Setting up ") {
			report(Progress{Phase: "install", Percent: lo + (hi-lo)*3/4, Message: line})
		}
	})
}

func emptyLists(root string) bool {
	ents, _ := os.ReadDir(filepath.Join(root, "var/lib/apt/lists"))
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), "_Packages") || strings.HasSuffix(e.Name(), "_Packages.lz4") {
			return false
		}
	}
	return true
}

// run runs argv, feeding each output line to line, and kills its whole
// process group when ctx ends. Failures carry the last lines of output.
func run(ctx context.Context, tool string, argv, env []string, line func(string)) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	if env != nil {
		cmd.Env = env
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", tool, err)
	}
	var tail []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			tail = append(tail, l)
			if len(tail) > logTail {
				tail = tail[1:]
			}
			line(l)
		}
		io.Copy(io.Discard, pr)
	}()
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			// The bootstrapper forks apt, dpkg and maintainer scripts.
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		case <-done:
		}
	}()
	err := cmd.Wait()
	close(done)
	pw.Close()
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		status := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			status = ee.ExitCode()
		}
		return &BootstrapError{Tool: tool, Status: status, Log: tail}
	}
	return nil
}

// shellQuote quotes s for the sh -c that mmdebstrap runs hooks with.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
