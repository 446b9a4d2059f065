package cli

import (
	"fmt"

	"github.com/berth-project/berth/generator"
	"github.com/berth-project/berth/internal/syslog"
)

// Set by meson, as for berth-generator; used for what the preview shows.
var (
	unitDir = "/usr/lib/systemd/system"
	binDir  = "/usr/bin"
)

func init() {
	register("generate", verb{
		usage: "generate --dry-run [--root DIR]",
		help:  "show the units berth-generator would write",
		run:   generate,
	})
}

func generate(e *env, args []string) int {
	fs := e.flags("generate")
	dryRun := fs.Bool("dry-run", false, "print what would be generated (required)")
	root := fs.String("root", "", "read the config below `DIR`")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if !*dryRun || fs.NArg() > 0 {
		fmt.Fprintln(e.stderr, "berth: generate only previews (--dry-run); systemctl daemon-reload runs the generator for real")
		return exitUsage
	}
	rep := generator.Run(generator.Config{
		Root: *root, OutDir: "/run/systemd/generator", Paths: generator.Paths{UnitDir: unitDir, BinDir: binDir}, DryRun: true,
		Stdout: e.stdout, Log: syslog.New("berth", e.stderr),
	})
	if len(rep.Failed) > 0 {
		fmt.Fprintf(e.stderr, "berth: %d machine(s) would be skipped; see the errors above\n", len(rep.Failed))
		return exitFail
	}
	return exitOK
}
