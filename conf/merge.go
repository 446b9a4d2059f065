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
		return conflict(two, "[Exec] ProcessTwo = true conflicts with Boot = true (set at %s)", boot.Pos())
	}
	if tmpl, ok := m.Get(SecMachine, "Template"); ok && tmpl.Str == m.Name {
		return conflict(tmpl, "[Machine] Template: machine %s cannot be its own template", m.Name)
	}
	return m.validateNamespaces()
}

// validateNamespaces applies systemd-nspawn's rules for user and network
// namespaces as they play out under systemd-nspawn@.service. That unit
// passes --network-veth and -U with --settings=override: a .nspawn file
// with any network setting replaces the unit's network options as a whole,
// and one with PrivateUsers= replaces -U.
func (m *Machine) validateNamespaces() error {
	var configured []Value // network settings that replace the unit's
	private := false
	for _, v := range m.Values {
		if v.Section() != SecNetwork || v.Def.Name == "Port" || v.Def.Kind == List && len(v.List) == 0 {
			continue
		}
		configured = append(configured, v)
		switch v.Def.Name {
		case "Private", "VirtualEthernet":
			private = private || v.Str == "yes"
		case "NamespacePath":
		default: // Bridge, Zone, Interface, MACVLAN, IPVLAN, VirtualEthernetExtra
			private = true
		}
	}
	if len(configured) == 0 {
		private = true // the unit's --network-veth
	}
	if ns, ok := m.Get(SecNetwork, "NamespacePath"); ok {
		for _, v := range configured {
			if v.Def != ns.Def {
				return conflict(ns, "[Network] NamespacePath cannot be combined with other network settings: %s is set at %s", v.Def.Name, v.Pos())
			}
		}
	}
	if port, ok := m.Get(SecNetwork, "Port"); ok && len(port.List) > 0 && !private {
		return conflict(port, "[Network] Port needs private networking, which the [Network] settings here turn off (set VirtualEthernet = true)")
	}
	users, _ := m.Get(SecExec, "PrivateUsers")
	if users.Str == "managed" && !private {
		return conflict(users, "[Exec] PrivateUsers = \"managed\" needs private networking, which the [Network] settings here turn off (set VirtualEthernet = true or Private = true)")
	}
	if d, ok := m.Get(SecExec, "PrivateUsersDelegate"); ok && d.Str != "0" && users.Str != "managed" {
		return conflict(d, "[Exec] PrivateUsersDelegate needs PrivateUsers = \"managed\"")
	}
	if sh, ok := m.Get(SecFiles, "BindUserShell"); ok {
		if bu, _ := m.Get(SecFiles, "BindUser"); len(bu.List) == 0 {
			return conflict(sh, "[Files] BindUserShell needs BindUser")
		}
	}
	return nil
}

func conflict(at Value, format string, args ...any) error {
	p := at.Pos()
	return Errors{{File: p.File, Line: p.Line, Msg: fmt.Sprintf(format, args...)}}
}

// CheckSystemd refuses keys and values that the systemd release version
// reports would not read. version is called only if m uses such a key.
func (m *Machine) CheckSystemd(version func() (int, error)) error {
	var errs Errors
	for _, v := range m.Values {
		since, what := v.Def.Since, v.Def.Name
		if s := v.Def.ValueSince[v.Str]; s > since {
			since, what = s, fmt.Sprintf("%s = %q", v.Def.Name, v.Str)
		}
		if since == 0 {
			continue
		}
		have, err := version()
		p := v.Pos()
		switch {
		case err != nil:
			errs = append(errs, &Error{File: p.File, Line: p.Line,
				Msg: fmt.Sprintf("[%s] %s needs systemd %d or later, and this host's version is unknown: %v", v.Section(), what, since, err)})
		case have < since:
			errs = append(errs, &Error{File: p.File, Line: p.Line,
				Msg: fmt.Sprintf("[%s] %s needs systemd %d or later; this host has systemd %d", v.Section(), what, since, have)})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}
