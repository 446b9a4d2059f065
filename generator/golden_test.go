package generator_test

import (
	"bytes"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/berth-project/berth/generator"
	"github.com/berth-project/berth/internal/syslog"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestGolden runs the generator on each testdata/*.txtar. Files under in/
// are written below a temporary root ("-> TARGET" makes a symlink); the
// run's output below that root and its log must equal want/ and log. A
// comment line "systemd N" runs it as if systemd N were installed.
func TestGolden(t *testing.T) {
	archives, _ := filepath.Glob("testdata/*.txtar")
	if len(archives) == 0 {
		t.Fatal("no golden files")
	}
	for _, path := range archives {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(path)
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			var kept []txtar.File
			for _, f := range ar.Files {
				name, ok := strings.CutPrefix(f.Name, "in/")
				if !ok {
					continue
				}
				kept = append(kept, f)
				writeTree(t, root, name, f.Data)
			}
			var log bytes.Buffer
			cfg := generator.Config{
				Root: root, OutDir: "/run/systemd/generator", Paths: generator.Paths{UnitDir: "/usr/lib/systemd/system", BinDir: "/usr/bin"},
				Log: syslog.New("berth-generator", &log),
			}
			for _, line := range strings.Split(string(ar.Comment), "\n") {
				if v, ok := strings.CutPrefix(line, "systemd "); ok {
					n, err := strconv.Atoi(v)
					if err != nil {
						t.Fatalf("comment %q: %v", line, err)
					}
					cfg.Systemd = func() (int, error) { return n, nil }
				}
			}
			rep := generator.Run(cfg)
			got := append(kept, readTree(t, root, "run")...)
			got = append(got, txtar.File{Name: "log", Data: log.Bytes()})
			if len(rep.Failed) > 0 && log.Len() == 0 {
				t.Error("failures were not logged")
			}
			if *update {
				ar.Files = got
				if err := os.WriteFile(path, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := map[string]string{}
			for _, f := range ar.Files {
				want[f.Name] = string(f.Data)
			}
			seen := map[string]bool{}
			for _, f := range got {
				seen[f.Name] = true
				if w, ok := want[f.Name]; !ok {
					t.Errorf("unexpected output %s:\n%s", f.Name, f.Data)
				} else if w != string(f.Data) {
					t.Errorf("%s differs:\n--- got\n%s--- want\n%s", f.Name, f.Data, w)
				}
			}
			for name := range want {
				if !seen[name] {
					t.Errorf("missing output %s", name)
				}
			}
		})
	}
}

func writeTree(t *testing.T, root, name string, data []byte) {
	full := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if target, ok := strings.CutPrefix(string(data), "-> "); ok {
		if err := os.Symlink(strings.TrimSpace(target), full); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.WriteFile(full, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readTree returns every file and link below root/dir as want/… entries,
// sorted; a link reads as "-> TARGET".
func readTree(t *testing.T, root, dir string) []txtar.File {
	var out []txtar.File
	err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var data []byte
		if d.Type()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			data = []byte("-> " + target + "\n")
		} else if data, err = os.ReadFile(p); err != nil {
			return err
		}
		out = append(out, txtar.File{Name: "want/" + rel, Data: data})
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	slices.SortFunc(out, func(a, b txtar.File) int { return strings.Compare(a.Name, b.Name) })
	return out
}
