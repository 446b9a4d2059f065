package cli

import (
	"flag"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/berth-project/berth/internal/manpage"
)

// berth(1) documents every verb, subcommand and option the code has, and
// nothing it does not have.
func TestManPage(t *testing.T) {
	page, err := manpage.Read("berth.1.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string][]string{} // "template create" -> its options
	for _, s := range page.Under("COMMANDS", 3) {
		words := strings.Fields(s.Title)
		cmd := words[0]
		if v, ok := verbs[cmd]; ok && v.subs != nil && len(words) > 1 {
			cmd += " " + words[1]
		}
		if _, dup := documented[cmd]; dup {
			t.Errorf("berth(1) documents %q twice", cmd)
		}
		documented[cmd] = []string{}
		for _, term := range s.Terms() {
			if strings.HasPrefix(term.Name, "--") {
				documented[cmd] = append(documented[cmd], term.Name)
			}
		}
	}
	for name, v := range verbs {
		if v.hidden {
			if _, ok := documented[name]; ok {
				t.Errorf("berth(1) documents the hidden %s", name)
			}
			continue
		}
		subs := []string{""}
		if v.subs != nil {
			subs = slices.Collect(maps.Keys(v.subs))
		}
		for _, sub := range subs {
			cmd := strings.TrimSpace(name + " " + sub)
			doc, ok := documented[cmd]
			if !ok {
				t.Errorf("berth(1) lacks the command %q", cmd)
				continue
			}
			delete(documented, cmd)
			var have []string
			options(name, sub).VisitAll(func(f *flag.Flag) { have = append(have, "--"+f.Name) })
			sort.Strings(have)
			sort.Strings(doc)
			if !slices.Equal(have, doc) {
				t.Errorf("berth %s: the code has options %q, berth(1) documents %q", cmd, have, doc)
			}
		}
	}
	for cmd := range documented {
		t.Errorf("berth(1) documents %q, which berth does not have", cmd)
	}

	exit, ok := page.Find("EXIT STATUS")
	if !ok {
		t.Fatal("berth(1) has no EXIT STATUS")
	}
	var codes []string
	for _, term := range exit.Terms() {
		codes = append(codes, term.Name)
	}
	if want := []string{"0", "1", "2"}; !slices.Equal(codes, want) || exitOK != 0 || exitFail != 1 || exitUsage != 2 {
		t.Errorf("exit codes documented %q; the code has %d, %d, %d", codes, exitOK, exitFail, exitUsage)
	}
}
