package conf

import (
	"fmt"
	"maps"
	"slices"
)

// Machine is a machine file merged with its drop-ins and validated.
type Machine struct {
	Name    string
	Source  string   // main file
	DropIns []string // applied after Source, in order
	Values  []Value  // merged, in schema order
}

// Get returns the merged value of section.key.
func (m *Machine) Get(section, key string) (Value, bool) { return get(m.Values, section, key) }

// Enabled reports whether [Machine] Enable = true.
func (m *Machine) Enabled() bool {
	v, _ := m.Get(SecMachine, "Enable")
	return v.Str == "yes"
}

// Merge applies files in order, as systemd applies drop-ins: a later scalar
// replaces, a later array appends (an empty one resets), a later table
// merges key by key (an empty one resets). files[0] is the main file.
func Merge(name string, files []*File) (*Machine, error) {
	m := &Machine{Name: name, Source: files[0].Path, Values: files[0].Values}
	if len(files) > 1 {
		m.Values = slices.Clone(m.Values)
		for _, f := range files[1:] {
			m.DropIns = append(m.DropIns, f.Path)
			for _, v := range f.Values {
				i := slices.IndexFunc(m.Values, func(o Value) bool { return o.order == v.order })
				if i < 0 {
					m.Values = append(m.Values, v)
				} else {
					m.Values[i] = mergeValue(m.Values[i], v)
				}
			}
		}
		slices.SortFunc(m.Values, func(a, b Value) int { return a.order - b.order })
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return m, nil
}

func mergeValue(old, v Value) Value {
	switch {
	case len(v.List) > 0:
		v.List = append(slices.Clone(old.List), v.List...)
	case len(v.Table) > 0:
		t := maps.Clone(old.Table)
		if t == nil {
			t = map[string]string{}
		}
		maps.Copy(t, v.Table)
		v.Table = t
	}
	return v
}

// validate checks what no single key can: combinations systemd-nspawn
// refuses at start.
func (m *Machine) validate() error {
	boot, _ := m.Get(SecExec, "Boot")
	two, _ := m.Get(SecExec, "ProcessTwo")
	if boot.Str == "yes" && two.Str == "yes" {
		at := two.Pos()
		return Errors{{File: at.File, Line: at.Line,
			Msg: fmt.Sprintf("[Exec] ProcessTwo = true conflicts with Boot = true (set at %s)", boot.Pos())}}
	}
	if tmpl, ok := m.Get(SecMachine, "Template"); ok && tmpl.Str == m.Name {
		at := tmpl.Pos()
		return Errors{{File: at.File, Line: at.Line,
			Msg: fmt.Sprintf("[Machine] Template: machine %s cannot be its own template", m.Name)}}
	}
	return nil
}
