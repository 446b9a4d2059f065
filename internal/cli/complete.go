package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/varlink/go/varlink"

	"github.com/berth-project/berth/varlinkd/ioberthmachine"
)

// arg is what a positional argument names, so completion can offer it.
type arg uint8

const (
	argNew      arg = iota // a name not yet taken: nothing to offer
	argImage               // a machine or template of the pool
	argMachine             // a machine
	argTemplate            // a template
	argSnapshot            // a snapshot of the machine named before it
	argFile                // a file (or - where the verb takes standard input/output)
	argFiles               // files, as many as given
	argSource              // a file or URL: files offered
)

// completeVerb is the hidden verb the shell completion scripts call, as
// podman's call "podman __complete": the shells stay thin and the verbs,
// options and names come from this binary and berthd.
const completeVerb = "__complete"

// Completion directives: printed alone, they ask the shell to complete
// paths itself.
const (
	completeFiles = ":file"
	completeDirs  = ":dir"
)

// completionTimeout bounds the read-only calls to berthd: completion must
// feel instant and stay quiet when berthd is slow or absent.
const completionTimeout = 2 * time.Second

// flagValues are the fixed values of options that take one of a few words.
var flagValues = map[string][]string{
	"verify":       {"signature", "checksum", "no"},
	"compression":  {"zstd", "gzip"},
	"format":       {"tar", "zstd", "xz", "gzip"},
	"bootstrapper": {"mmdebstrap", "debootstrap"},
	"variant":      {"extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important", "standard"},
}

func init() {
	register(completeVerb, verb{usage: completeVerb + " WORD...", hidden: true, run: complete})
}

// options returns the flags of a verb (and its subcommand) by running it
// with -h in describe mode: every verb parses its flags before it does
// anything, so this is the verbs' own FlagSet and cannot drift from it.
func options(name, sub string) *flag.FlagSet {
	v, ok := verbs[name]
	if !ok {
		return nil
	}
	e := &env{stdout: io.Discard, stderr: io.Discard, describing: true}
	args := []string{"-h"}
	if sub != "" {
		args = []string{sub, "-h"}
	}
	v.run(e, args)
	return e.described
}

// lookupFlag returns the option name if it takes a value (not a boolean).
func lookupFlag(fs *flag.FlagSet, name string) *flag.Flag {
	if fs == nil {
		return nil
	}
	f := fs.Lookup(name)
	if f == nil {
		return nil
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return nil
	}
	return f
}

// complete prints the candidates for the last of words, one a line, or a
// directive asking the shell for paths. words are the command line after
// "berth", the last one being completed (possibly empty).
func complete(e *env, words []string) int {
	for _, c := range candidates(words, berthdNames) {
		fmt.Fprintln(e.stdout, c)
	}
	return exitOK
}

// names lists the pool's names of a kind; quiet (nil) when berthd cannot
// answer in time.
type names func(kind arg, machine string) []string

func candidates(words []string, lookup names) []string {
	if len(words) == 0 {
		words = []string{""}
	}
	cur, before := words[len(words)-1], words[:len(words)-1]
	if len(before) == 0 {
		var out []string
		for n, v := range verbs {
			if !v.hidden {
				out = append(out, n)
			}
		}
		return prefixed(out, cur)
	}
	name := before[0]
	v, ok := verbs[name]
	if !ok || v.hidden {
		return nil
	}
	// Walk the words so far: the subcommand, then positionals, skipping
	// options and the values they take.
	sub := ""
	var fs *flag.FlagSet
	var pos []string
	if v.subs == nil {
		fs = options(name, "")
	}
	for i := 1; i < len(before); i++ {
		w := before[i]
		if v.subs != nil && sub == "" && !strings.HasPrefix(w, "-") {
			sub = w
			fs = options(name, sub)
			continue
		}
		if strings.HasPrefix(w, "-") && len(w) > 1 && w != "--" {
			if !strings.Contains(w, "=") && lookupFlag(fs, strings.TrimLeft(w, "-")) != nil {
				i++
			}
			continue
		}
		pos = append(pos, w)
	}
	// The value of an option, given as --name=value or as the next word?
	if n, val, ok := strings.Cut(strings.TrimLeft(cur, "-"), "="); ok && strings.HasPrefix(cur, "-") {
		f := lookupFlag(fs, n)
		if f == nil {
			return nil
		}
		out := optionValue(f, val)
		if len(out) == 1 && strings.HasPrefix(out[0], ":") {
			return out
		}
		for i := range out {
			out[i] = "--" + n + "=" + out[i]
		}
		return out
	}
	if prev := before[len(before)-1]; strings.HasPrefix(prev, "-") && !strings.Contains(prev, "=") {
		if f := lookupFlag(fs, strings.TrimLeft(prev, "-")); f != nil {
			return optionValue(f, cur)
		}
	}
	if v.subs != nil && sub == "" {
		return prefixed(slices.Collect(maps.Keys(v.subs)), cur)
	}
	if strings.HasPrefix(cur, "-") {
		var out []string
		if fs != nil {
			fs.VisitAll(func(f *flag.Flag) { out = append(out, "--"+f.Name) })
		}
		return prefixed(out, cur)
	}
	kinds := v.args
	if v.subs != nil {
		kinds = v.subs[sub]
	}
	if len(kinds) == 0 {
		return nil
	}
	kind := kinds[min(len(pos), len(kinds)-1)]
	if len(pos) >= len(kinds) && kind != argFiles {
		return nil // all arguments given; only a trailing FILE... repeats
	}
	switch kind {
	case argFile, argFiles, argSource:
		return []string{completeFiles}
	case argNew:
		return nil
	}
	machine := ""
	if kind == argSnapshot && len(pos) > 0 {
		machine = pos[len(pos)-1]
	}
	return prefixed(lookup(kind, machine), cur)
}

func optionValue(f *flag.Flag, cur string) []string {
	if vals, ok := flagValues[f.Name]; ok {
		return prefixed(vals, cur)
	}
	switch placeholder, _ := flag.UnquoteUsage(f); placeholder {
	case "FILE":
		return []string{completeFiles}
	case "DIR":
		return []string{completeDirs}
	}
	return nil
}

func prefixed(all []string, cur string) []string {
	var out []string
	for _, s := range all {
		if strings.HasPrefix(s, cur) {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// berthdNames asks berthd, read-only, for the names of a kind.
func berthdNames(kind arg, machine string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	c, err := varlink.NewConnection(ctx, "unix:"+socket())
	if err != nil {
		return nil
	}
	defer c.Close()
	none := func(error) bool { return true }
	var out []string
	if kind == argSnapshot {
		recv, err := ioberthmachine.ListSnapshots().Send(ctx, c, varlink.More, machine)
		if err != nil {
			return nil
		}
		all, _ := collect(ctx, recv, none)
		for _, s := range all {
			out = append(out, s.Name)
		}
		return out
	}
	recv, err := ioberthmachine.List().Send(ctx, c, varlink.More)
	if err != nil {
		return nil
	}
	all, _ := collect(ctx, recv, none)
	for _, img := range all {
		if kind == argImage || kind == argMachine && img.Kind == "machine" || kind == argTemplate && img.Kind == "template" {
			out = append(out, img.Name)
		}
	}
	return out
}
