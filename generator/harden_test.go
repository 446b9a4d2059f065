package generator_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/generator"
	"github.com/berth-project/berth/internal/syslog"
)

const goodMachine = "[Exec]\nBoot = true\n"

// runOn runs the generator on root, failing t if it does not return
// within seconds (at boot, systemd waits for it), and returns its log.
func runOn(t *testing.T, root string) (generator.Report, string) {
	t.Helper()
	var log bytes.Buffer
	done := make(chan generator.Report, 1)
	go func() {
		done <- generator.Run(generator.Config{
			Root: root, OutDir: "/run/systemd/generator", Paths: generator.Paths{UnitDir: "/usr/lib/systemd/system", BinDir: "/usr/bin"},
			Log: syslog.New("berth-generator", &log),
		})
	}()
	select {
	case rep := <-done:
		return rep, log.String()
	case <-time.After(20 * time.Second):
		t.Fatal("the generator blocked")
		return generator.Report{}, ""
	}
}

func nspawnFile(root, name string) string {
	return filepath.Join(root, generator.NspawnDir, name+".nspawn")
}

// TestGeneratorNeverBlocks: a FIFO, a device and an oversized file named
// *.toml are refused at once; the good machine is generated.
func TestGeneratorNeverBlocks(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "etc/berth/machines")
	writeTree(t, root, "etc/berth/machines/good.toml", []byte(goodMachine))
	if err := unix.Mkfifo(filepath.Join(dir, "fifo.toml"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Symlink("/dev/zero", filepath.Join(dir, "zero.toml"))
	big, _ := os.Create(filepath.Join(dir, "big.toml"))
	big.Truncate(128 << 20)
	big.Close()
	rep, log := runOn(t, root)
	if strings.Join(rep.Generated, " ") != "good" || len(rep.Failed) != 3 {
		t.Errorf("generated %v, failed %v", rep.Generated, rep.Failed)
	}
	for _, want := range []string{"fifo.toml: cannot read: not a regular file", "zero.toml: cannot read: not a regular file", "big.toml: cannot read: larger than"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// TestDropInNamesCannotAddSettings: a drop-in whose name holds a newline
// shows up quoted in the comments, never as a line of its own.
func TestDropInNamesCannotAddSettings(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, "etc/berth/machines/m.toml", []byte(goodMachine))
	writeTree(t, root, "etc/berth/machines/m.toml.d/x\nExecStartPre=evil\n[Exec]\nPrivateUsers=no\n.toml", []byte("[Exec]\nBoot = true\n"))
	rep, _ := runOn(t, root)
	if len(rep.Generated) != 1 {
		t.Fatalf("generated %v, failed %v", rep.Generated, rep.Failed)
	}
	dropIn, _ := os.ReadFile(filepath.Join(root, "run/systemd/generator/systemd-nspawn@m.service.d", generator.DropInName))
	nspawn, _ := os.ReadFile(nspawnFile(root, "m"))
	for _, out := range [][]byte{dropIn, nspawn} {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "ExecStartPre=evil") || strings.HasPrefix(line, "PrivateUsers=no") {
				t.Errorf("a file name became a setting:\n%s", out)
			}
		}
		if !strings.Contains(string(out), `# Drop-in: "/etc/berth/machines/m.toml.d/x\nExecStartPre`) {
			t.Errorf("the name is not quoted:\n%s", out)
		}
	}
}

// TestTornFilesReplaced: an empty .nspawn, or one cut inside berth's
// header, as a run killed while writing left them, is replaced; a file
// that is not berth's is still left alone. No temporary file stays.
func TestTornFilesReplaced(t *testing.T) {
	root := t.TempDir()
	for _, m := range []string{"empty", "torn", "foreign"} {
		writeTree(t, root, "etc/berth/machines/"+m+".toml", []byte(goodMachine))
	}
	writeTree(t, root, "run/systemd/nspawn/empty.nspawn", nil)
	writeTree(t, root, "run/systemd/nspawn/torn.nspawn", []byte(generator.Header[:20]))
	writeTree(t, root, "run/systemd/nspawn/foreign.nspawn", []byte("[Exec]\nBoot=no\n"))
	rep, _ := runOn(t, root)
	if strings.Join(rep.Generated, " ") != "empty torn" || len(rep.Failed) != 1 || rep.Failed[0].Name != "foreign" {
		t.Errorf("generated %v, failed %v", rep.Generated, rep.Failed)
	}
	for _, m := range []string{"empty", "torn"} {
		if b, _ := os.ReadFile(nspawnFile(root, m)); !bytes.HasPrefix(b, []byte(generator.Header)) {
			t.Errorf("%s.nspawn not replaced: %q", m, b)
		}
	}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if strings.HasSuffix(p, ".berth-tmp") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

// TestUnreadableDirectoryDeletesNothing: when a directory of the search
// path cannot be read (here a symlink loop), the machines in it are not
// taken for gone: their settings stay, the error is logged, and the
// other machines are generated.
func TestUnreadableDirectoryDeletesNothing(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, "etc/berth/machines/good.toml", []byte(goodMachine))
	writeTree(t, root, "usr/lib/berth/machines/vendor.toml", []byte(goodMachine))
	if rep, _ := runOn(t, root); len(rep.Generated) != 2 {
		t.Fatalf("first run: %v", rep)
	}
	os.RemoveAll(filepath.Join(root, "usr/lib/berth/machines"))
	os.Symlink("machines", filepath.Join(root, "usr/lib/berth/machines"))
	rep, log := runOn(t, root)
	if strings.Join(rep.Generated, " ") != "good" {
		t.Errorf("generated %v", rep.Generated)
	}
	if _, err := os.Stat(nspawnFile(root, "vendor")); err != nil {
		t.Errorf("the settings of a machine in the unreadable directory went: %v", err)
	}
	if !strings.Contains(log, "/usr/lib/berth/machines: cannot read directory") {
		t.Errorf("not logged:\n%s", log)
	}
	// Readable again and the machine really gone: now it is removed.
	os.Remove(filepath.Join(root, "usr/lib/berth/machines"))
	runOn(t, root)
	if _, err := os.Stat(nspawnFile(root, "vendor")); !os.IsNotExist(err) {
		t.Errorf("stale settings kept once the directory reads: %v", err)
	}
}
