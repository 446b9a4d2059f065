package cli

import (
	"fmt"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/sdversion"
)

func init() {
	register("verify", verb{
		usage: "verify [--root DIR] [--systemd VERSION] [FILE...]",
		help:  "check machine files (all in the search path if none given)",
		run:   verify,
		args:  []arg{argFiles},
	})
}

func verify(e *env, args []string) int {
	fs := e.flags("verify")
	root := fs.String("root", "", "check the machines configured below `DIR`")
	release := fs.Int("systemd", 0, "check against systemd `VERSION` instead of the installed systemd-nspawn's")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	systemd := sdversion.Installed
	if *release > 0 {
		systemd = func() (int, error) { return *release, nil }
	}
	failed := 0
	if fs.NArg() == 0 {
		loader := conf.Loader{Root: *root, Systemd: systemd}
		for _, res := range loader.LoadAll() {
			if res.Err != nil {
				fmt.Fprintln(e.stderr, res.Err)
				failed++
			}
		}
	}
	for _, p := range fs.Args() {
		if err := verifyFile(p, systemd); err != nil {
			fmt.Fprintln(e.stderr, err)
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(e.stderr, "berth: %d file(s) with errors; fix them, then run systemctl daemon-reload\n", failed)
		return exitFail
	}
	return exitOK
}

// verifyFile checks one file on its own, with the same parser and the same
// messages as the generator. Cross-key checks apply as if it had no drop-ins.
func verifyFile(p string, systemd func() (int, error)) error {
	f, err := conf.ParseFile(p)
	if err != nil {
		return err
	}
	m, err := conf.Merge("", []*conf.File{f})
	if err != nil {
		return err
	}
	return m.CheckSystemd(systemd)
}
