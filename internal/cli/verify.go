package cli

import (
	"fmt"

	"github.com/berth-project/berth/conf"
)

func init() {
	register("verify", verb{
		usage: "verify [--root DIR] [FILE...]",
		help:  "check machine files (all in the search path if none given)",
		run:   verify,
	})
}

func verify(e *env, args []string) int {
	fs := e.flags("verify")
	root := fs.String("root", "", "check the machines configured below `DIR`")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	failed := 0
	if fs.NArg() == 0 {
		loader := conf.Loader{Root: *root}
		for _, res := range loader.LoadAll() {
			if res.Err != nil {
				fmt.Fprintln(e.stderr, res.Err)
				failed++
			}
		}
	}
	for _, p := range fs.Args() {
		if err := verifyFile(p); err != nil {
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
func verifyFile(p string) error {
	f, err := conf.ParseFile(p)
	if err != nil {
		return err
	}
	_, err = conf.Merge("", []*conf.File{f})
	return err
}
