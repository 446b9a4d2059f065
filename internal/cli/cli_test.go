package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/varlink/go/varlink"

	"github.com/berth-project/berth/varlinkd/ioberthmachine"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	badName := filepath.Join(dir, "bad_name.toml")
	os.WriteFile(good, []byte("[Exec]\nBoot = true\n"), 0o644)
	os.WriteFile(bad, []byte("[Exec]\nBoot = true\nProcessTwo = true\n[Network]\nPort = \"80\"\n"), 0o644)
	os.WriteFile(badName, []byte("[Exec]\nBoot = true\n"), 0o644)

	if code, _, stderr := run("verify", good); code != 0 || stderr != "" {
		t.Errorf("verify good: %d %q", code, stderr)
	}
	code, _, stderr := run("verify", good, bad, badName)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		bad + ":5: [Network] Port: expected an array of strings, got a string",
		badName + `: invalid machine name "bad_name"`,
		"2 file(s) with errors",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if code, _, stderr := run("verify", filepath.Join(dir, "missing.toml")); code != 1 || !strings.Contains(stderr, "missing.toml: cannot read") {
		t.Errorf("missing: %d %s", code, stderr)
	}
}

// --systemd checks a file for another host's release.
func TestVerifySystemdRelease(t *testing.T) {
	f := filepath.Join(t.TempDir(), "netns.toml")
	os.WriteFile(f, []byte("[Exec]\nBoot = true\n[Network]\nNamespacePath = \"/run/netns/web\"\n"), 0o644)
	code, _, stderr := run("verify", "--systemd", "257", f)
	if want := f + ":4: [Network] NamespacePath needs systemd 259 or later; this host has systemd 257"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("on 257: %d %q, want %q", code, stderr, want)
	}
	if code, _, stderr := run("verify", "--systemd", "259", f); code != 0 || stderr != "" {
		t.Errorf("on 259: %d %q", code, stderr)
	}
}

func TestVerifyRootAndGenerate(t *testing.T) {
	root := t.TempDir()
	mdir := filepath.Join(root, "etc/berth/machines")
	os.MkdirAll(mdir, 0o755)
	os.WriteFile(filepath.Join(mdir, "web.toml"), []byte("[Machine]\nEnable = true\n[Exec]\nBoot = true\n"), 0o644)
	if code, _, stderr := run("verify", "--root", root); code != 0 {
		t.Errorf("verify --root: %d %s", code, stderr)
	}
	code, stdout, _ := run("generate", "--dry-run", "--root", root)
	if code != 0 || !strings.Contains(stdout, "# /run/systemd/nspawn/web.nspawn\n") ||
		!strings.Contains(stdout, "machines.target.wants/systemd-nspawn@web.service -> ") {
		t.Errorf("generate: %d\n%s", code, stdout)
	}
	if _, err := os.Stat(filepath.Join(root, "run")); !os.IsNotExist(err) {
		t.Errorf("dry run wrote files: %v", err)
	}
	os.WriteFile(filepath.Join(mdir, "bad.toml"), []byte("[Exec]\nBot = true\n"), 0o644)
	code, _, stderr := run("generate", "--dry-run", "--root", root)
	if code != 1 || !strings.Contains(stderr, `/etc/berth/machines/bad.toml:2: unknown key "Bot"`) {
		t.Errorf("generate with bad file: %d %s", code, stderr)
	}
	if code, _, _ := run("generate"); code != 2 {
		t.Errorf("generate without --dry-run: %d, want 2", code)
	}
	if code, _, _ := run("frobnicate"); code != 2 {
		t.Errorf("unknown verb: %d", code)
	}
}

// SHA256SUMS keeps the other files' lines and replaces this one's.
func TestReplaceSum(t *testing.T) {
	p := filepath.Join(t.TempDir(), "SHA256SUMS")
	os.WriteFile(p, []byte("aaaa *other.tar.xz\nbbbb  web.tar.xz\n"), 0o644)
	if err := replaceSum(p, "web.tar.xz", "cccc"); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "aaaa *other.tar.xz\ncccc *web.tar.xz\n" {
		t.Errorf("SHA256SUMS: %q", got)
	}
	if err := replaceSum(filepath.Join(filepath.Dir(p), "new"), "a.tar.xz", "dddd"); err != nil {
		t.Fatal(err)
	}
}

// Off a terminal, progress is a line when a phase starts and one at each
// quarter, not a redrawn bar; on one, a bar redrawn in place.
func TestProgressLines(t *testing.T) {
	var log bytes.Buffer
	p := newProgress(&log)
	for _, u := range []struct {
		pct   int
		phase string
	}{{0, "download"}, {10, "download"}, {26, "download"}, {30, "download"}, {51, "download"}, {99, "download"}, {0, "apply"}, {50, "apply"}} {
		p.update(u.pct, u.phase, "msg")
	}
	p.done()
	want := "download: 0% msg\ndownload: 26% msg\ndownload: 51% msg\ndownload: 99% msg\napply: 0% msg\napply: 50% msg\n"
	if log.String() != want {
		t.Errorf("off a terminal:\n%s\nwant:\n%s", log.String(), want)
	}
	var term bytes.Buffer
	bar := &progress{w: &term, tty: true}
	bar.update(50, "x", "half")
	bar.done()
	if !strings.Contains(term.String(), "\r\033[K[###############...............]  50% half") || strings.Contains(term.String(), "\n") {
		t.Errorf("on a terminal: %q", term.String())
	}
}

// With --json, progress records go to stdout as JSON lines and the bar
// stays away; an export to stdout refuses --json, which would corrupt it.
func TestFollowJSON(t *testing.T) {
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, jsonProgress: true}
	replies := []*ioberthmachine.Progress{{Phase: "export", Percent: 10, Message: "a"}, {Phase: "export", Percent: 90, Message: "b"}, nil}
	i := 0
	v, err := follow(context.Background(), e, func(context.Context) (*ioberthmachine.Progress, int, uint64, error) {
		p := replies[i]
		i++
		if p == nil {
			return nil, 42, 0, nil
		}
		return p, 0, varlink.Continues, nil
	})
	if err != nil || v != 42 {
		t.Fatalf("follow: %v %v", v, err)
	}
	want := `{"progress":{"phase":"export","percent":10,"message":"a"}}` + "\n" + `{"progress":{"phase":"export","percent":90,"message":"b"}}` + "\n"
	if out.String() != want || errb.Len() != 0 {
		t.Errorf("stdout %q, stderr %q", out.String(), errb.String())
	}
	if code, _, stderr := run("export", "--json", "web", "-"); code != exitUsage || !strings.Contains(stderr, "--json writes to standard output") {
		t.Errorf("export --json to stdout: %d %q", code, stderr)
	}
}
