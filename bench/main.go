// Command bench measures berth against the tools an admin would otherwise
// use, side by side in one run, and prints a Markdown report. Run it with
// scripts/bench (as root); it uses the testbed's Debian trixie base, with
// podman added for Quadlet.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/berth-project/berth/testbed"
)

func main() {
	runs := flag.Int("runs", 25, "timed runs per generator command")
	only := flag.String("only", "", "run one benchmark: generator, templates, machines or registry")
	flag.Parse()
	var err error
	if *only == "" || *only == "generator" {
		err = benchGeneratorAll(*runs)
	}
	if err == nil && (*only == "" || *only == "templates") {
		err = benchTemplates()
	}
	if err == nil && (*only == "" || *only == "machines") {
		err = benchMachines()
	}
	if err == nil && (*only == "" || *only == "registry") {
		err = benchRegistry()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// benchGeneratorAll runs the generator benchmark in a chroot of each
// testbed system (its podman's Quadlet beside berth-generator).
func benchGeneratorAll(runs int) error {
	ctx := context.Background()
	pool, err := testbed.Open(ctx, os.Stderr)
	if err != nil {
		return err
	}
	src, err := testbed.SourceRoot()
	if err != nil {
		return err
	}
	fmt.Printf("## Generator: 1000 machines, berth-generator vs podman Quadlet\n\n")
	fmt.Printf("Both run in the same Debian chroot, once per testbed system, reading from and writing to tmpfs as generators do under systemd; %d timed runs each, alternating, output directories emptied between runs. The last rows are berth-generator's worst case: the bad inputs of issue 9 beside one good machine.\n", runs)
	for _, sys := range testbed.Systems {
		if err := benchGeneratorOn(ctx, pool, sys, src, runs); err != nil {
			return fmt.Errorf("systemd %s: %w", sys.Name, err)
		}
	}
	return nil
}

func benchGeneratorOn(ctx context.Context, pool *testbed.Pool, sys testbed.System, src string, runs int) error {
	base, err := pool.BaseFor(ctx, sys, "podman")
	if err != nil {
		return err
	}
	root, err := pool.Snapshot(ctx, base, fmt.Sprintf("bench-%d", os.Getpid()))
	if err != nil {
		return err
	}
	defer pool.DeleteSubvolume(context.Background(), root)
	bin := filepath.Join(root, "usr/local/bin/berth-generator")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/berth-generator")
	build.Dir, build.Env = src, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build: %v\n%s", err, out)
	}
	// Data to disk, so that writeback does not run beside the timed runs.
	// (Not btrfs subvolume sync: its wait for deleted snapshots to be
	// cleaned can take many minutes and does not touch what is timed.)
	if out, err := exec.CommandContext(ctx, "sync", "--file-system", root).CombinedOutput(); err != nil {
		return fmt.Errorf("sync: %v: %s", err, out)
	}
	v, err := quadletVersion(root)
	if err != nil {
		return err
	}
	fmt.Printf("\n### systemd %s (Debian %s), %s\n\n", sys.Name, sys.Suite, v)
	return benchGenerator(root, runs)
}

// quadletVersion is the podman release whose Quadlet is measured, as the
// chroot's dpkg database has it (podman itself wants more than a chroot).
func quadletVersion(root string) (string, error) {
	out, err := exec.Command("dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f=${Version}", "podman").Output()
	if err != nil {
		return "", fmt.Errorf("podman's version: %w", err)
	}
	return "podman " + strings.TrimSpace(string(out)), nil
}

// timeIt runs argv chrooted into root and returns its wall time.
// A run whose input is meant to be bad (badInput) may log errors; any
// other must not.
func timeIt(root string, env []string, badInput bool, argv ...string) (time.Duration, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil || !badInput && strings.Contains(stderr.String(), "rror") {
		return d, fmt.Errorf("%s: %v %s", strings.Join(argv, " "), err, stderr.String())
	}
	return d, nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// The same machine as a Quadlet container.
const containerUnit = `[Container]
Image=localhost/nginx
Exec=/usr/sbin/nginx -g "daemon off;"
Environment=TZ=UTC
Volume=/srv/www:/var/www:ro
Network=host

[Service]
MemoryMax=512M

[Install]
WantedBy=multi-user.target
`

func benchGenerator(root string, runs int) error {
	tmp := filepath.Join(root, "bench")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	// mount -t tmpfs tmpfs ROOT/bench
	if err := syscall.Mount("tmpfs", tmp, "tmpfs", 0, "size=2g"); err != nil {
		return fmt.Errorf("mount tmpfs: %w", err)
	}
	defer syscall.Unmount(tmp, syscall.MNT_DETACH)

	write := func(dir, name, content string, n int) error {
		if err := os.MkdirAll(filepath.Join(tmp, dir), 0o755); err != nil {
			return err
		}
		for i := range n {
			p := filepath.Join(tmp, dir, fmt.Sprintf(name, i))
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	src, err := testbed.SourceRoot()
	if err != nil {
		return err
	}
	tomlBytes, err := os.ReadFile(filepath.Join(src, "bench/machine.toml"))
	if err != nil {
		return err
	}
	machineTOML := string(tomlBytes)
	if err := write("berth1000/etc/berth/machines", "m%04d.toml", machineTOML, 1000); err != nil {
		return err
	}
	if err := write("berth1/etc/berth/machines", "m%04d.toml", machineTOML, 1); err != nil {
		return err
	}
	if err := write("quadlet1000/in", "m%04d.container", containerUnit, 1000); err != nil {
		return err
	}
	if err := writeBadInputs(filepath.Join(tmp, "unknown"), filepath.Join(tmp, "allbad"), machineTOML); err != nil {
		return err
	}
	env := []string{"PATH=/usr/bin:/bin", "SYSTEMD_LOG_LEVEL=notice"}
	if g := os.Getenv("BENCH_GOGC"); g != "" {
		env = append(env, "GOGC="+g)
	}
	type cmd struct {
		name  string
		env   []string
		argv  []string
		clean []string
		bad   bool
	}
	cmds := []cmd{
		{"berth-generator, 1000 machines", env,
			[]string{"/usr/local/bin/berth-generator", "--root", "/bench/berth1000", "/run/systemd/generator"},
			[]string{"berth1000/run"}, false},
		{"quadlet, 1000 containers", append(env, "QUADLET_UNIT_DIRS=/bench/quadlet1000/in"),
			[]string{"/usr/libexec/podman/quadlet", "/bench/quadlet1000/out", "/bench/quadlet1000/early", "/bench/quadlet1000/late"},
			[]string{"quadlet1000/out", "quadlet1000/early", "quadlet1000/late"}, false},
		{"berth-generator, 1 machine", env,
			[]string{"/usr/local/bin/berth-generator", "--root", "/bench/berth1", "/run/systemd/generator"},
			[]string{"berth1/run"}, false},
		{"berth-generator, a 5 MB file of unknown keys", env,
			[]string{"/usr/local/bin/berth-generator", "--root", "/bench/unknown", "/run/systemd/generator"},
			[]string{"unknown/run"}, true},
		{"berth-generator, every bad input at once", env,
			[]string{"/usr/local/bin/berth-generator", "--root", "/bench/allbad", "/run/systemd/generator"},
			[]string{"allbad/run"}, true},
	}
	// The comparison alternates berth and Quadlet; the bad inputs, which
	// allocate hundreds of megabytes, run after it so as not to disturb it.
	times := make([][]time.Duration, len(cmds))
	rounds := func(first, last int) error {
		for i := -2; i < runs; i++ { // two warm-up rounds
			for j := first; j < last; j++ {
				c := cmds[j]
				for _, d := range c.clean {
					os.RemoveAll(filepath.Join(tmp, d))
					if strings.HasPrefix(d, "quadlet") {
						os.MkdirAll(filepath.Join(tmp, d), 0o755)
					}
				}
				d, err := timeIt(root, c.env, c.bad, c.argv...)
				if err != nil {
					return err
				}
				if i >= 0 {
					times[j] = append(times[j], d)
				}
			}
		}
		return nil
	}
	if err := rounds(0, 3); err != nil {
		return err
	}
	if err := rounds(3, len(cmds)); err != nil {
		return err
	}
	// Both must really have generated everything.
	if n := count(filepath.Join(tmp, "berth1000/run/systemd/nspawn")); n != 1000 {
		return fmt.Errorf("berth wrote %d .nspawn files, want 1000", n)
	}
	if n := count(filepath.Join(tmp, "quadlet1000/out")); n < 1000 {
		return fmt.Errorf("quadlet wrote %d files, want ≥ 1000", n)
	}
	fmt.Println("| command | median | min | max |")
	fmt.Println("|---|---|---|---|")
	for j, c := range cmds {
		s := slices.Clone(times[j])
		slices.Sort(s)
		fmt.Printf("| %s | %s | %s | %s |\n", c.name, ms(median(s)), ms(s[0]), ms(s[len(s)-1]))
	}
	ratio := float64(median(times[1])) / float64(median(times[0]))
	fmt.Printf("\nberth-generator is **%.1f×** faster than Quadlet for 1000 machines (target ≥ 3×); one machine takes %s (target < 5 ms); the worst bad input costs %s.\n",
		ratio, ms(median(times[2])), ms(max(median(times[3]), median(times[4]))))
	for _, d := range []string{"unknown", "allbad"} {
		if n := count(filepath.Join(tmp, d, "run/systemd/nspawn")); n != 1 {
			return fmt.Errorf("%s: the good machine was not generated (%d files)", d, n)
		}
	}
	return nil
}

// writeBadInputs makes two roots beside one good machine: one with a
// 5 MB machine file of unknown keys, one with every bad input issue 9
// names (that file, a FIFO, a 100 MB sparse file, a drop-in whose name
// holds newlines, a search directory that is a symlink loop).
func writeBadInputs(unknownRoot, allRoot, good string) error {
	var b strings.Builder
	b.WriteString("[Exec]\n")
	for i := 0; b.Len() < 5<<20; i++ {
		fmt.Fprintf(&b, "NoSuchKey%d = 1\n", i)
	}
	for _, r := range []string{unknownRoot, allRoot} {
		dir := filepath.Join(r, "etc/berth/machines")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "good.toml"), []byte(good), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "unknown.toml"), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	dir := filepath.Join(allRoot, "etc/berth/machines")
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.toml"), 0o644); err != nil {
		return err
	}
	huge, err := os.Create(filepath.Join(dir, "huge.toml"))
	if err != nil {
		return err
	}
	huge.Close()
	if err := os.Truncate(huge.Name(), 100<<20); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "good.toml.d"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "good.toml.d", "x\nExecStartPre=evil\n.toml"), []byte("[Service]\nTasksMax = 9\n"), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(allRoot, "usr/lib/berth"), 0o755); err != nil {
		return err
	}
	return os.Symlink("machines", filepath.Join(allRoot, "usr/lib/berth/machines"))
}

func count(dir string) int {
	ents, _ := os.ReadDir(dir)
	return len(ents)
}
