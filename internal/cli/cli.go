// Package cli implements the berth command: one file per verb, human hints
// here and nowhere else.
package cli

import (
	"flag"
	"fmt"
	"io"
	"sort"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

type env struct {
	stdout, stderr io.Writer
	// jsonProgress streams progress records to stdout, one JSON object a
	// line, instead of showing them (a verb's --json).
	jsonProgress bool
}

type verb struct {
	usage string
	help  string
	run   func(e *env, args []string) int
}

var verbs = map[string]verb{}

func register(name string, v verb) { verbs[name] = v }

// Run runs berth with args (without the program name) and returns the exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	v, ok := verbs[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "berth: unknown command %q\n", args[0])
		usage(e.stderr)
		return exitUsage
	}
	return v.run(e, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: berth COMMAND [ARGS]\n\ncommands:")
	names := make([]string, 0, len(verbs))
	for n := range verbs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-40s %s\n", verbs[n].usage, verbs[n].help)
	}
}

// flags returns a FlagSet for a verb that prints its usage to e.stderr.
func (e *env) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: berth %s\n", verbs[name].usage)
		fs.PrintDefaults()
	}
	return fs
}
