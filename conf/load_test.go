package conf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tree writes files below a temporary root; a value "-> X" makes a symlink.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "-> "); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestLoaderPrecedenceMaskingDropIns(t *testing.T) {
	root := tree(t, map[string]string{
		// /etc wins over /usr/lib for the main file.
		"/etc/berth/machines/web.toml":     "[Exec]\nHostname = \"etc\"\nCapability = [\"CAP_A\"]\n",
		"/usr/lib/berth/machines/web.toml": "[Exec]\nHostname = \"usr\"\n",
		// Masked in /etc: gone even though /usr/lib has it.
		"/usr/lib/berth/machines/gone.toml": "[Exec]\nBoot = true\n",
		"/etc/berth/machines/gone.toml":     "-> /dev/null",
		// Drop-ins: file-name order across dirs; same name in a higher dir
		// (or NAME.toml.d over machines.d) shadows; /dev/null masks.
		"/usr/lib/berth/machines.d/10-all.toml":          "[Exec]\nCapability = [\"CAP_B\"]\nEnvironment = { A = \"1\", B = \"1\" }\n",
		"/run/berth/machines/web.toml.d/20-web.toml":     "[Exec]\nEnvironment = { B = \"2\" }\nHostname = \"dropin\"\n",
		"/usr/lib/berth/machines/web.toml.d/20-web.toml": "[Exec]\nHostname = \"shadowed\"\n",
		"/etc/berth/machines.d/30-reset.toml":            "[Exec]\nCapability = []\n",
		"/usr/lib/berth/machines.d/40-add.toml":          "[Exec]\nCapability = [\"CAP_C\"]\n",
		"/usr/lib/berth/machines.d/50-masked.toml":       "[Exec]\nHostname = \"masked\"\n",
		"/etc/berth/machines.d/50-masked.toml":           "-> /dev/null",
		"/etc/berth/machines.d/README":                   "not a drop-in",
		// Invalid name: reported, others unaffected.
		"/etc/berth/machines/bad_name.toml": "",
	})
	l := Loader{Root: root}
	results := l.LoadAll()
	var names []string
	for _, r := range results {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, ","); got != "bad_name,web" {
		t.Fatalf("machines = %s, want bad_name,web", got)
	}
	if err := results[0].Err; err == nil || !strings.Contains(err.Error(), `/etc/berth/machines/bad_name.toml: invalid machine name "bad_name"`) {
		t.Errorf("bad_name: %v", err)
	}
	m := results[1].Machine
	if results[1].Err != nil {
		t.Fatal(results[1].Err)
	}
	if m.Source != "/etc/berth/machines/web.toml" {
		t.Errorf("source = %s", m.Source)
	}
	wantDropIns := "/usr/lib/berth/machines.d/10-all.toml /run/berth/machines/web.toml.d/20-web.toml /etc/berth/machines.d/30-reset.toml /usr/lib/berth/machines.d/40-add.toml"
	if got := strings.Join(m.DropIns, " "); got != wantDropIns {
		t.Errorf("drop-ins:\n got %s\nwant %s", got, wantDropIns)
	}
	host, _ := m.Get(SecExec, "Hostname")
	if host.Str != "dropin" || host.Pos().File != "/run/berth/machines/web.toml.d/20-web.toml" {
		t.Errorf("Hostname = %+v", host)
	}
	if caps, _ := m.Get(SecExec, "Capability"); strings.Join(caps.List, ",") != "CAP_C" {
		t.Errorf("Capability = %v, want reset then CAP_C", caps.List)
	}
	if env, _ := m.Get(SecExec, "Environment"); env.Table["A"] != "1" || env.Table["B"] != "2" {
		t.Errorf("Environment = %v", env.Table)
	}
	if _, err := l.Load("gone"); !errors.Is(err, ErrMasked) {
		t.Errorf("Load(gone) = %v, want masked", err)
	}
	if _, err := l.Load("nope"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(nope) = %v, want not exist", err)
	}
}

func TestBrokenDropInFailsOnlyItsMachines(t *testing.T) {
	root := tree(t, map[string]string{
		"/etc/berth/machines/a.toml":          "[Exec]\nBoot = true\n",
		"/etc/berth/machines/b.toml":          "[Exec]\nBoot = true\n",
		"/etc/berth/machines/b.toml.d/x.toml": "[Exec]\nBoot = 1\n",
	})
	res := (&Loader{Root: root}).LoadAll()
	if res[0].Err != nil {
		t.Errorf("a: %v", res[0].Err)
	}
	if res[1].Err == nil || !strings.HasPrefix(res[1].Err.Error(), "/etc/berth/machines/b.toml.d/x.toml:2: [Exec] Boot") {
		t.Errorf("b: %v", res[1].Err)
	}
}

func TestMergeConflict(t *testing.T) {
	a, _ := Parse("a.toml", []byte("[Exec]\nBoot = true\n"))
	b, _ := Parse("b.toml", []byte("\n[Exec]\nProcessTwo = true\n"))
	_, err := Merge("m", []*File{a, b})
	if err == nil || err.Error() != "b.toml:3: [Exec] ProcessTwo = true conflicts with Boot = true (set at a.toml:2)" {
		t.Errorf("err = %v", err)
	}
	c, _ := Parse("c.toml", []byte("[Machine]\nTemplate = \"m\"\n"))
	if _, err := Merge("m", []*File{c}); err == nil || !strings.Contains(err.Error(), "cannot be its own template") {
		t.Errorf("err = %v", err)
	}
}

func TestLoadSettings(t *testing.T) {
	l := &Loader{Root: tree(t, map[string]string{})}
	if p, c, err := l.LoadSettings("/var/lib/machines", "/var/cache/berth"); err != nil || p != "/var/lib/machines" || c != "/var/cache/berth" {
		t.Errorf("defaults: %s %s %v", p, c, err)
	}
	l.Root = tree(t, map[string]string{
		"/usr/lib/berth/berth.toml":          "[Pool]\nDirectory = \"/srv/machines\"\n",
		"/etc/berth/berth.toml.d/cache.toml": "[Cache]\nDirectory = \"/srv/cache\"\n",
		"/etc/berth/machines/web.toml":       "[Exec]\nBoot = true\n",
	})
	if p, c, err := l.LoadSettings("/var/lib/machines", "/var/cache/berth"); err != nil || p != "/srv/machines" || c != "/srv/cache" {
		t.Errorf("configured: %s %s %v", p, c, err)
	}
	l.Root = tree(t, map[string]string{"/etc/berth/berth.toml": "[Pool]\nDirectory = \"relative\"\n"})
	if _, _, err := l.LoadSettings("/a", "/b"); err == nil || !strings.Contains(err.Error(), `/etc/berth/berth.toml:2: [Pool] Directory: "relative" is not an absolute path`) {
		t.Errorf("bad: %v", err)
	}
}
