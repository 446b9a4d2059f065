package manpage

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Every page is named as its file and its section, and every berth page
// it refers to exists: meson installs man/*.md, nothing else.
func TestPages(t *testing.T) {
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.md"))
	if len(files) < 7 {
		t.Fatalf("only %d pages in %s", len(files), dir)
	}
	var names []string
	for _, f := range files {
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".md"))
	}
	for _, f := range files {
		p, err := Read(filepath.Base(f))
		if err != nil {
			t.Fatal(err)
		}
		if want := p.Name + "." + p.Section; want != strings.TrimSuffix(filepath.Base(f), ".md") {
			t.Errorf("%s is titled %s(%s)", f, p.Name, p.Section)
		}
		if _, ok := p.Find("NAME"); !ok {
			t.Errorf("%s has no NAME section", f)
		}
		src, _ := os.ReadFile(f)
		for _, m := range pageRef.FindAllStringSubmatch(string(src), -1) {
			if page := m[1] + "." + m[2]; !slices.Contains(names, page) {
				t.Errorf("%s refers to %s(%s), which is not a page here", filepath.Base(f), m[1], m[2])
			}
		}
	}
}

// pageRef is a reference to one of berth's pages: **berth.machine**(5).
var pageRef = regexp.MustCompile(`\*\*(berth[\w.-]*)\*\*\((\d)\)`)

func TestTerms(t *testing.T) {
	s := Section{Body: []string{
		"Prose.", "",
		"**--size** *SIZE*", ": The size,", "in bytes.", "",
		"More prose.", "",
		"**--image** *FILE*", ": The image.",
	}}
	got := s.Terms()
	want := []Term{{"--size", "*SIZE*", "The size, in bytes."}, {"--image", "*FILE*", "The image."}}
	if !slices.Equal(got, want) {
		t.Fatalf("%q", got)
	}
}
