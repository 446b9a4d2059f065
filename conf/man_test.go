package conf

import (
	"fmt"
	"strings"
	"testing"

	"github.com/berth-project/berth/internal/manpage"
)

// manType is how the pages name a key's TOML type.
func manType(k *KeyDef) string {
	switch {
	case k.Kind == String && k.Int:
		return "string or integer"
	case k.Kind == Bool:
		return "boolean"
	case k.Kind == String:
		return "string"
	case k.Kind == BoolOrString:
		return "boolean or string"
	case k.Kind == List:
		return "array of strings"
	case k.Kind == Table:
		return "table of strings"
	}
	return "?"
}

// The file format pages document every section and key of their schema,
// with its type and the systemd release it needs, and nothing else.
func TestManPages(t *testing.T) {
	for file, schema := range map[string]*Schema{
		"berth.machine.5.md":  Machines,
		"berth.template.5.md": Templates,
		"berth.toml.5.md":     Settings,
	} {
		page, err := manpage.Read(file)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, s := range page.Sections {
			name, ok := strings.CutSuffix(s.Title, " SECTION OPTIONS")
			if !ok || s.Level != 2 {
				continue
			}
			name = strings.Trim(name, "[]")
			var sec *Section
			for _, cand := range schema.Sections {
				if strings.EqualFold(cand.Name, name) {
					sec = cand
				}
			}
			if sec == nil {
				t.Errorf("%s documents section [%s], which %s files do not have", file, name, schema.Kind)
				continue
			}
			seen[sec.Name] = true
			keys := map[string]bool{}
			for _, term := range s.Terms() {
				k := sec.Key(term.Name)
				if k == nil {
					t.Errorf("%s documents [%s] %s, which does not exist", file, sec.Name, term.Name)
					continue
				}
				keys[k.Name] = true
				if want := "= *" + manType(k) + "*"; term.Rest != want {
					t.Errorf("%s: [%s] %s is documented as %q, but is %q", file, sec.Name, k.Name, term.Rest, want)
				}
				if k.Since > 0 && !strings.Contains(term.Def, fmt.Sprintf("systemd %d or later", k.Since)) {
					t.Errorf("%s: [%s] %s does not say it needs systemd %d", file, sec.Name, k.Name, k.Since)
				}
				for v, since := range k.ValueSince {
					if !strings.Contains(term.Def, fmt.Sprintf("*%s* (systemd %d or later", v, since)) {
						t.Errorf("%s: [%s] %s does not say %q needs systemd %d", file, sec.Name, k.Name, v, since)
					}
				}
			}
			for _, k := range sec.Keys {
				if !keys[k.Name] {
					t.Errorf("%s lacks [%s] %s", file, sec.Name, k.Name)
				}
			}
		}
		for _, sec := range schema.Sections {
			if !seen[sec.Name] {
				t.Errorf("%s lacks the section [%s]", file, sec.Name)
			}
		}
	}
}
