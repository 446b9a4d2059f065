package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/berth-project/berth/internal/btrfs"
	"github.com/berth-project/berth/testbed"
)

const (
	suite  = "bookworm"
	mirror = "http://deb.debian.org/debian"
)

// benchTemplates builds bookworm minbase trees side by side on one loop
// btrfs: the seed's debootstrap cold and from a --make-tarball tarball,
// and berth (berthd + CLI) cold and warm. Every tool starts with empty
// caches; the tarball is made before the timed run.
func benchTemplates() error {
	ctx := context.Background()
	pool, err := testbed.Open(ctx, os.Stderr)
	if err != nil {
		return err
	}
	if err := pool.Settle(ctx); err != nil {
		return err
	}
	work := filepath.Join(filepath.Dir(poolDir(pool)), "bench-templates")
	// A fresh file system per run: nothing cached from an earlier one.
	if err := freshBtrfs(work); err != nil {
		return err
	}
	defer exec.Command("umount", "-l", filepath.Join(work, "mnt")).Run()
	mnt := filepath.Join(work, "mnt")
	src, err := testbed.SourceRoot()
	if err != nil {
		return err
	}
	bin := filepath.Join(work, "bin")
	for _, c := range []string{"berth", "berthd"} {
		b := exec.Command("go", "build", "-o", filepath.Join(bin, c), "./cmd/"+c)
		b.Dir = src
		if out, err := b.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", c, err, out)
		}
	}

	tarball := filepath.Join(work, "bookworm-minbase.tgz")
	fmt.Fprintln(os.Stderr, "bench: preparing the debootstrap tarball (untimed)")
	if err := sh(filepath.Join(mnt, "tarball-tree"), "debootstrap", "--variant=minbase", "--make-tarball="+tarball, suite, filepath.Join(mnt, "tarball-tree"), mirror); err != nil {
		return err
	}

	// berthd on its own pool, cache and socket.
	sock := filepath.Join(work, "berthd.sock")
	berthd := exec.Command(filepath.Join(bin, "berthd"), "--listen", sock, "--pool", filepath.Join(mnt, "machines"),
		"--cache", filepath.Join(mnt, "cache"), "--idle", "0")
	berthd.Stderr = os.Stderr
	if err := berthd.Start(); err != nil {
		return err
	}
	defer func() { berthd.Process.Signal(syscall.SIGTERM); berthd.Wait() }()
	for i := 0; i < 50; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	berth := func(args ...string) func() error {
		return func() error {
			c := exec.Command(filepath.Join(bin, "berth"), args...)
			c.Env = append(os.Environ(), "BERTH_SOCKET="+sock)
			if out, err := c.CombinedOutput(); err != nil {
				return fmt.Errorf("berth %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return nil
		}
	}
	type step struct {
		name string
		run  func() error
	}
	steps := []step{
		{"debootstrap --variant=minbase (cold)", func() error {
			return sh("", "debootstrap", "--variant=minbase", suite, filepath.Join(mnt, "db-cold"), mirror)
		}},
		{"debootstrap --unpack-tarball", func() error {
			return sh("", "debootstrap", "--variant=minbase", "--unpack-tarball="+tarball, suite, filepath.Join(mnt, "db-tarball"), mirror)
		}},
		{"berth template create (cold)", berth("template", "create", "b-cold", "--suite", suite)},
		{"berth template create --include vim (warm)", berth("template", "create", "b-warm", "--suite", suite, "--include", "vim")},
	}
	times := make([]time.Duration, len(steps))
	for i, s := range steps {
		fmt.Fprintf(os.Stderr, "bench: %s\n", s.name)
		start := time.Now()
		if err := s.run(); err != nil {
			return err
		}
		times[i] = time.Since(start)
	}
	fmt.Printf("\n## Templates: bookworm minbase, berth against the seed's debootstrap\n\n")
	fmt.Printf("One run, side by side on one fresh loop-mounted btrfs, every tool with empty caches, mirror %s. berth is berthd plus the CLI over varlink; \"warm\" is a second template of the same suite with another include list after the first.\n\n", mirror)
	fmt.Println("| build | time |")
	fmt.Println("|---|---|")
	for i, s := range steps {
		fmt.Printf("| %s | %.1f s |\n", s.name, times[i].Seconds())
	}
	fmt.Printf("\nberth cold is **%.2f×** debootstrap's time (target ≤ 0.8×); berth warm is **%.2f×** the unpack-tarball time (target ≤ 0.5×).\n",
		times[2].Seconds()/times[0].Seconds(), times[3].Seconds()/times[1].Seconds())
	return nil
}

func poolDir(p *testbed.Pool) string { return p.Dir() }

func sh(mkdir string, argv ...string) error {
	if mkdir != "" {
		os.MkdirAll(mkdir, 0o755)
	}
	c := exec.Command(argv[0], argv[1:]...)
	if out, err := c.CombinedOutput(); err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) > 10 {
			lines = lines[len(lines)-10:]
		}
		return fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, strings.Join(lines, "\n"))
	}
	return nil
}

// freshBtrfs mounts a new 20 GB sparse btrfs on dir/mnt.
func freshBtrfs(dir string) error {
	mnt := filepath.Join(dir, "mnt")
	exec.Command("umount", "-l", mnt).Run()
	os.RemoveAll(dir)
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	img := filepath.Join(dir, "pool.img")
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	f.Close()
	if err := os.Truncate(img, 20<<30); err != nil {
		return err
	}
	if err := sh("", "mkfs.btrfs", "-q", img); err != nil {
		return err
	}
	if err := sh("", "mount", "-o", "loop", img, mnt); err != nil {
		return err
	}
	if ok, _ := btrfs.IsBtrfsPath(mnt); !ok {
		return fmt.Errorf("%s is not btrfs", mnt)
	}
	return nil
}
