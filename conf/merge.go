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
	Values  map[string]map[string]Value
}

// Get returns the merged value of section.key.
func (m *Machine) Get(section, key string) (Value, bool) {
	v, ok := m.Values[section][key]
	return v, ok
}

// Enabled reports whether [Machine] Enable = true.
func (m *Machine) Enabled() bool {
	v, _ := m.Get(SecMachine, "Enable")
	return v.Str == "yes"
}

// Merge applies files in order, as systemd applies drop-ins: a later scalar
// replaces, a later array appends (an empty one resets), a later table
// merges key by key (an empty one resets). files[0] is the main file.
func Merge(name string, files []*File) (*Machine, error) {
	m := &Machine{Name: name, Values: map[string]map[string]Value{}}
	for i, f := range files {
		if i == 0 {
			m.Source = f.Path
		} else {
			m.DropIns = append(m.DropIns, f.Path)
		}
		for sec, kv := range f.Values {
			if m.Values[sec] == nil {
				m.Values[sec] = map[string]Value{}
			}
			for key, v := range kv {
				m.Values[sec][key] = mergeValue(m.Values[sec][key], v)
			}
		}
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return m, nil
}

func mergeValue(old, v Value) Value {
	switch {
	case v.List != nil && len(v.List) > 0:
		v.List = append(slices.Clone(old.List), v.List...)
	case v.Table != nil && len(v.Table) > 0:
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
		return Errors{{File: two.Pos.File, Line: two.Pos.Line,
			Msg: fmt.Sprintf("[Exec] ProcessTwo = true conflicts with Boot = true (set at %s)", boot.Pos)}}
	}
	if tmpl, ok := m.Get(SecMachine, "Template"); ok && tmpl.Str == m.Name {
		return Errors{{File: tmpl.Pos.File, Line: tmpl.Pos.Line,
			Msg: fmt.Sprintf("[Machine] Template: machine %s cannot be its own template", m.Name)}}
	}
	return nil
}
