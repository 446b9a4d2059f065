// Command berth-generator is berth's systemd system generator; see
// systemd.generator(7). It turns /etc/berth/machines/*.toml into .nspawn
// files, systemd-nspawn@.service drop-ins and wants-links.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/berth-project/berth/generator"
	"github.com/berth-project/berth/internal/syslog"
)

// Set by meson: systemd's systemdsystemunitdir and berth's bindir.
var (
	unitDir = "/usr/lib/systemd/system"
	binDir  = "/usr/bin"
)

// flags are the generator's options; berth-generator(8) documents each
// (man_test.go).
func flags() (fs *flag.FlagSet, root *string, dryRun *bool) {
	fs = flag.NewFlagSet("berth-generator", flag.ExitOnError)
	root = fs.String("root", "", "read config and write output below `DIR` (as systemctl --root)")
	dryRun = fs.Bool("dry-run", false, "print what would be generated; write nothing")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [--root DIR] [--dry-run] [NORMAL-DIR [EARLY-DIR LATE-DIR]]\n", os.Args[0])
		fs.PrintDefaults()
	}
	return fs, root, dryRun
}

func main() {
	fs, root, dryRun := flags()
	fs.Parse(os.Args[1:])
	// A short-lived process that parses many small files: no collections
	// until the heap is large (measured in bench/: a third of the run time).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(-1)
		debug.SetMemoryLimit(256 << 20)
	}
	args := fs.Args()
	if len(args) != 0 && len(args) != 1 && len(args) != 3 || len(args) == 0 && !*dryRun && *root == "" {
		fs.Usage()
		os.Exit(2)
	}
	outDir := "/run/systemd/generator"
	if len(args) > 0 {
		outDir = args[0]
	}
	log := syslog.New("berth-generator", os.Stderr)
	// SYSTEMD_SCOPE is set when PID 1 runs us; log where systemd shows
	// generator output then, and plainly when a person runs us.
	if os.Getenv("SYSTEMD_SCOPE") != "" && !*dryRun {
		log = syslog.ForService("berth-generator")
	}
	rep := generator.Run(generator.Config{
		Root: *root, OutDir: outDir, Paths: generator.Paths{UnitDir: unitDir, BinDir: binDir},
		DryRun: *dryRun, Stdout: os.Stdout, Log: log,
	})
	// A failed machine must not fail boot: exit 0 unless a person asked for
	// a dry run and wants to know.
	if *dryRun && len(rep.Failed) > 0 {
		os.Exit(1)
	}
}
