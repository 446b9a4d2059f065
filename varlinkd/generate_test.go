package varlinkd_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBindingsUpToDate regenerates every interface's Go bindings from its
// .varlink file and fails if the committed ones differ: run
// go generate ./varlinkd/... after editing an IDL.
func TestBindingsUpToDate(t *testing.T) {
	idls, _ := filepath.Glob("io*/*.varlink")
	if len(idls) == 0 {
		t.Fatal("no .varlink files")
	}
	for _, idl := range idls {
		pkg := filepath.Base(filepath.Dir(idl))
		tmp := t.TempDir()
		data, err := os.ReadFile(idl)
		if err != nil {
			t.Fatal(err)
		}
		copyPath := filepath.Join(tmp, filepath.Base(idl))
		os.WriteFile(copyPath, data, 0o644)
		cmd := exec.Command("go", "run", "github.com/varlink/go/cmd/varlink-go-interface-generator", copyPath)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("generate %s: %v\n%s", idl, err, out)
		}
		want, _ := os.ReadFile(filepath.Join(tmp, pkg+".go"))
		got, err := os.ReadFile(filepath.Join(filepath.Dir(idl), pkg+".go"))
		if err != nil || len(want) == 0 || !bytes.Equal(got, want) {
			t.Errorf("%s: committed bindings are stale (%v); run go generate ./varlinkd/...", strings.TrimSuffix(idl, ".varlink"), err)
		}
	}
}
