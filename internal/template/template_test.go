//go:build testbed

package template_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-project/berth/internal/pool"
	"github.com/berth-project/berth/internal/template"
	"github.com/berth-project/berth/testbed"
)

func debCount(t *testing.T, dir string) int {
	m, _ := filepath.Glob(filepath.Join(dir, "debs", "*", "*.deb"))
	return len(m)
}

// TestCreateColdWarm builds two real bookworm minbase templates from
// Debian's mirror on a loop btrfs pool: the first bootstraps, the second
// reuses the base tree and the package cache.
func TestCreateColdWarm(t *testing.T) {
	testbed.RequireRoot(t, "mmdebstrap", "mkfs.btrfs", "dpkg-query")
	mnt := testbed.LoopBtrfs(t, 8<<30)
	p, err := pool.Open(filepath.Join(mnt, "machines"))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Btrfs() {
		t.Fatal("pool on btrfs not detected")
	}
	m := &template.Manager{Pool: p, CacheDir: filepath.Join(mnt, "cache")}
	ctx := context.Background()
	var phases []string
	report := func(pr template.Progress) { phases = append(phases, pr.Phase+":"+pr.Message) }

	info, err := m.Create(ctx, "bw-less", template.Recipe{Suite: "bookworm", Include: []string{"less"}}, report)
	if err != nil {
		t.Fatal(err)
	}
	if !info.ReadOnly || info.Kind != "subvolume" || info.Recipe.Variant != "minbase" {
		t.Errorf("info = %+v", info)
	}
	if !slices.ContainsFunc(info.Packages, func(s string) bool { return strings.HasPrefix(s, "less ") }) {
		t.Errorf("less not in package list (%d packages)", len(info.Packages))
	}
	root := p.Path("bw-less")
	if b, err := os.ReadFile(filepath.Join(root, "etc/machine-id")); err != nil || len(b) != 0 {
		t.Errorf("machine-id = %q, %v; want empty", b, err)
	}
	if lists, _ := filepath.Glob(filepath.Join(root, "var/lib/apt/lists/*_Packages*")); len(lists) != 0 {
		t.Errorf("apt lists left: %v", lists)
	}
	if len(p.Leftovers()) != 0 {
		t.Errorf("leftovers: %v", p.Leftovers())
	}
	cached := debCount(t, m.CacheDir)
	if cached < 50 {
		t.Fatalf("package cache holds %d .debs", cached)
	}

	phases = nil
	if _, err := m.Create(ctx, "bw-less2", template.Recipe{Suite: "bookworm", Include: []string{"less"}}, report); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(phases, func(s string) bool { return strings.Contains(s, "reusing the cached") }) {
		t.Errorf("second build did not reuse the base: %v", phases)
	}
	if n := debCount(t, m.CacheDir); n != cached {
		t.Errorf("second build downloaded %d packages", n-cached)
	}

	if _, err := m.Create(ctx, "bw-less", template.Recipe{Suite: "bookworm"}, report); !errors.Is(err, template.ErrExists) {
		t.Errorf("duplicate create: %v", err)
	}
	var re *template.RecipeError
	if _, err := m.Create(ctx, "x", template.Recipe{Suite: "no-such-suite"}, report); !errors.As(err, &re) || re.Field != "suite" {
		t.Errorf("unknown suite: %v", err)
	}
	if _, err := m.Create(ctx, "x", template.Recipe{Suite: "bookworm", Include: []string{"no-such-package-berth"}}, report); err == nil {
		t.Error("unknown package accepted")
	} else if _, ok := err.(*template.BootstrapError); !ok {
		t.Errorf("unknown package: %T %v", err, err)
	}
	if p.Exists("x") || len(p.Leftovers()) != 0 {
		t.Errorf("failed build left x=%v leftovers=%v", p.Exists("x"), p.Leftovers())
	}
	list, err := m.List()
	if err != nil || len(list) != 2 {
		t.Errorf("List = %v, %v", list, err)
	}
	if err := m.Remove("bw-less2"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Show("bw-less2"); !errors.Is(err, template.ErrNotFound) {
		t.Errorf("Show after Remove: %v", err)
	}
}
