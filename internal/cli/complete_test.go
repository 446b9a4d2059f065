package cli

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"
)

// pool stands in for berthd's answers: a template, two machines, and
// snapshots of one of them.
func pool(kind arg, machine string) []string {
	switch kind {
	case argImage:
		return []string{"base", "web", "db"}
	case argMachine:
		return []string{"web", "db"}
	case argTemplate:
		return []string{"base"}
	case argSnapshot:
		if machine == "web" {
			return []string{"before-upgrade", "nightly"}
		}
	}
	return nil
}

func TestCandidates(t *testing.T) {
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"cl"}, []string{"clone"}},
		{[]string{"ex"}, []string{"export"}},
		{[]string{"__"}, nil}, // the hidden verb is not offered
		{[]string{"clone", ""}, []string{"base"}},
		{[]string{"clone", "base", ""}, nil},
		{[]string{"clone", "--"}, []string{"--if-missing", "--json"}},
		{[]string{"clone", "--if-missing", ""}, []string{"base"}},
		{[]string{"remove", ""}, []string{"db", "web"}},
		{[]string{"show", "b"}, []string{"base"}},
		{[]string{"restore", "web", ""}, []string{"before-upgrade", "nightly"}},
		{[]string{"snapshot", "--remove", "web", "n"}, []string{"nightly"}},
		{[]string{"restore", "db", ""}, nil},
		{[]string{"export", "--format", ""}, []string{"gzip", "tar", "xz", "zstd"}},
		{[]string{"export", "--format", "xz", ""}, []string{"base", "db", "web"}},
		{[]string{"export", "--format=xz", "web", ""}, []string{completeFiles}},
		{[]string{"export", "web", "out.tar", ""}, nil},
		{[]string{"export", "--format=x"}, []string{"--format=xz"}},
		{[]string{"export", "--force=x"}, nil},
		{[]string{"pool", "init", "--image=/v"}, []string{completeFiles}},
		{[]string{"import", ""}, []string{completeFiles}},
		{[]string{"pull", "--verify", "c"}, []string{"checksum"}},
		{[]string{"publish", "--sign-key", ""}, []string{completeFiles}},
		{[]string{"publish", "--http", ""}, []string{completeDirs}},
		{[]string{"publish", "--json", ""}, []string{"base", "db", "web"}},
		{[]string{"verify", "a.toml", "b.toml", ""}, []string{completeFiles}},
		{[]string{"verify", "--root", ""}, []string{completeDirs}},
		{[]string{"template", ""}, []string{"adopt", "create", "list", "remove", "show"}},
		{[]string{"template", "remove", ""}, []string{"base"}},
		{[]string{"template", "adopt", ""}, []string{"db", "web"}},
		{[]string{"template", "create", "--bootstrapper", "d"}, []string{"debootstrap"}},
		{[]string{"template", "create", "--su"}, []string{"--suite"}},
		{[]string{"pool", "init", "--"}, []string{"--image", "--size"}},
		{[]string{"pool", "init", "--image", ""}, []string{completeFiles}},
		{[]string{"cache", ""}, []string{"clean", "list"}},
		{[]string{"nonsense", ""}, nil},
	} {
		got := candidates(tc.words, pool)
		if !slices.Equal(got, tc.want) {
			t.Errorf("berth %s<TAB> = %q, want %q", strings.Join(tc.words, " "), got, tc.want)
		}
	}
}

// Every verb and subcommand hands over its FlagSet when asked, so
// completion and the man page check see every option it has.
func TestOptionsOfEveryVerb(t *testing.T) {
	for name, v := range verbs {
		if v.hidden {
			continue
		}
		subs := []string{""}
		if v.subs != nil {
			subs = slices.Collect(maps.Keys(v.subs))
		}
		for _, sub := range subs {
			fs := options(name, sub)
			if fs == nil {
				t.Errorf("berth %s %s -h did not reach its flags", name, sub)
			}
		}
	}
	if options("nonsense", "") != nil {
		t.Error("an unknown verb has options")
	}
}

// The hidden verb prints one candidate a line, and nothing when berthd
// cannot be reached (completion stays quiet).
func TestCompleteVerbQuiet(t *testing.T) {
	t.Setenv("BERTH_SOCKET", t.TempDir()+"/none")
	var out, errOut bytes.Buffer
	if code := Run([]string{completeVerb, "remove", ""}, &out, &errOut); code != exitOK || out.Len() != 0 || errOut.Len() != 0 {
		t.Fatalf("without berthd: code %d, out %q, err %q", code, out.String(), errOut.String())
	}
	out.Reset()
	Run([]string{completeVerb, "re"}, &out, &errOut)
	if got := strings.Fields(out.String()); !slices.Equal(got, []string{"remove", "rename", "restore"}) {
		t.Fatalf("verbs: %q", got)
	}
	out.Reset()
	Run([]string{"--help"}, &out, &errOut)
	if strings.Contains(errOut.String(), completeVerb) {
		t.Fatalf("usage lists the hidden verb: %s", errOut.String())
	}
}
