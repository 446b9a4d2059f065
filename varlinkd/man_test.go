package varlinkd

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/berth-project/berth/internal/manpage"
)

var declaration = regexp.MustCompile(`(?m)^(?:method|error) (\w+)\(`)

// berth-varlink(7) documents every method and error of every interface
// berthd serves, and nothing else.
func TestManPage(t *testing.T) {
	page, err := manpage.Read("berth-varlink.7.md")
	if err != nil {
		t.Fatal(err)
	}
	idls, _ := filepath.Glob("ioberth*/*.varlink")
	if len(idls) != 3 {
		t.Fatalf("interfaces: %q", idls)
	}
	for _, idl := range idls {
		src, err := os.ReadFile(idl)
		if err != nil {
			t.Fatal(err)
		}
		iface := strings.TrimSuffix(filepath.Base(idl), ".varlink")
		var have, doc []string
		for _, m := range declaration.FindAllStringSubmatch(string(src), -1) {
			have = append(have, m[1])
		}
		for _, s := range page.Under(iface, 3) {
			for _, term := range s.Terms() {
				doc = append(doc, term.Name)
			}
		}
		sort.Strings(have)
		sort.Strings(doc)
		if !slices.Equal(have, doc) {
			t.Errorf("%s declares %q; berth-varlink(7) documents %q", iface, have, doc)
		}
	}
}
