package generator_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-project/berth/generator"
	"github.com/berth-project/berth/internal/syslog"
)

// BenchmarkRun1000 is the in-process view of bench/: 1000 machines from
// an empty output tree, as at boot. Profile with -cpuprofile.
func BenchmarkRun1000(b *testing.B) {
	root := b.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "berth-bench-"); err == nil {
		root = d
		defer os.RemoveAll(d)
	}
	dir := filepath.Join(root, "etc/berth/machines")
	os.MkdirAll(dir, 0o755)
	benchTOML, err := os.ReadFile("../bench/machine.toml")
	if err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("m%04d.toml", i)), benchTOML, 0o644)
	}
	for b.Loop() {
		b.StopTimer()
		os.RemoveAll(filepath.Join(root, "run"))
		b.StartTimer()
		rep := generator.Run(generator.Config{Root: root, OutDir: "/run/systemd/generator",
			Paths: generator.Paths{UnitDir: "/usr/lib/systemd/system", BinDir: "/usr/bin"}, Log: syslog.New("bench", io.Discard)})
		if len(rep.Generated) != 1000 {
			b.Fatalf("generated %d", len(rep.Generated))
		}
	}
}
