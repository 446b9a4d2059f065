// Package cli implements the berth command: one file per verb, human hints
// here and nowhere else.
package cli

import (
	"flag"
	"fmt"
	"io"
	"sort"
)

// Exit codes, as documented in berth(1).
const (
	exitOK    = 0 // done
	exitFail  = 1 // berthd (or the check) refused or failed; the message says why
	exitUsage = 2 // the command line is wrong: unknown verb, option or argument count
)

type env struct {
	stdout, stderr io.Writer
	// jsonProgress streams progress records to stdout, one JSON object a
	// line, instead of showing them (a verb's --json).
	jsonProgress bool
	// describing: the verb runs only to hand its FlagSet to described
	// (see options); -h stops it before it does anything.
	describing bool
	described  *flag.FlagSet
}

type verb struct {
	usage string
	help  string
	run   func(e *env, args []string) int
	// args are the kinds of the positional arguments, for completion; the
	// last repeats. A verb with subcommands has them in subs instead.
	args []arg
	subs map[string][]arg
	// hidden verbs are for scripts (shell completion), not in the usage.
	hidden bool
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
	for n, v := range verbs {
		if !v.hidden {
			names = append(names, n)
		}
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
		if e.describing {
			e.described = fs
			return
		}
		fmt.Fprintf(e.stderr, "usage: berth %s\n", verbs[name].usage)
		fs.PrintDefaults()
	}
	return fs
}
