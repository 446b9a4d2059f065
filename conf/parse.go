package conf

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// Pos is where a value was set.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Value is one key's value from one file, already checked against its
// KeyDef. Scalars are normalized to the text systemd reads (booleans become
// yes/no); a List that is empty but non-nil resets what came before.
type Value struct {
	Def   *KeyDef
	Str   string
	List  []string
	Table map[string]string

	section string
	order   int // position in the schema; values are kept sorted by it
	file    *File
}

// Section is the section v was set in.
func (v *Value) Section() string { return v.section }

// Pos returns where v was set. Lines are found only when asked for, which
// is on errors: the generator parses every file at every boot.
func (v *Value) Pos() Pos {
	if v.file == nil {
		return Pos{}
	}
	return Pos{v.file.Path, v.file.line(v.section, v.Def.Name)}
}

// File is one parsed machine file or drop-in.
type File struct {
	Path   string
	Values []Value // in schema order

	src     []byte
	locOnce sync.Once
	loc     *locator
}

// Get returns the value of section.key set in f.
func (f *File) Get(section, key string) (Value, bool) { return get(f.Values, section, key) }

func get(vals []Value, section, key string) (Value, bool) {
	for _, v := range vals {
		if v.section == section && v.Def.Name == key {
			return v, true
		}
	}
	return Value{}, false
}

func (f *File) line(path ...string) int {
	f.locOnce.Do(func() { f.loc = newLocator(f.src) })
	return f.loc.line(path...)
}

// Parse decodes a machine file; see Schema.Parse.
func Parse(path string, src []byte) (*File, error) { return Machines.Parse(path, src) }

// Parse decodes src strictly against the schema. Every problem is reported
// with file, line and key; any problem rejects the whole file.
func (schema *Schema) Parse(path string, src []byte) (*File, error) {
	raw, err := decode(src)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, Errors{{File: path, Line: pe.Position.Line, Msg: "TOML syntax error: " + pe.Message}}
		}
		return nil, Errors{{File: path, Msg: "TOML syntax error: " + err.Error()}}
	}
	n := 0
	for _, v := range raw {
		if t, ok := v.(map[string]any); ok {
			n += len(t)
		}
	}
	p := parser{schema: schema, file: &File{Path: path, src: src, Values: make([]Value, 0, n)}}
	for secName, v := range raw {
		p.section(secName, v)
	}
	if len(p.errs) > 0 {
		return nil, p.report()
	}
	slices.SortFunc(p.file.Values, func(a, b Value) int { return a.order - b.order })
	return p.file, nil
}

// decode turns TOML into maps, the quick way when it can.
func decode(src []byte) (map[string]any, error) {
	if raw, ok := quickDecode(src); ok {
		return raw, nil
	}
	var raw map[string]any
	_, err := toml.Decode(string(src), &raw)
	return raw, err
}

type parser struct {
	schema *Schema
	file   *File
	errs   []pending
}

// pending is an error not yet formatted: messages and did-you-mean hints
// are worked out only for the errors reported, which keeps a file of many
// bad keys cheap and linear in its size.
type pending struct {
	line   int
	seq    int // order found, to keep the sort stable
	format string
	args   []any
	// name, if not "", is an unknown name; known lists the names it
	// might have meant.
	name  string
	known func() []string
}

// MaxErrors is how many errors one file reports; the rest are counted.
const MaxErrors = 50

// report sorts the errors by line, keeps the first MaxErrors (and any on
// the same line as the last of them) with their hints, and counts the
// rest.
func (p *parser) report() Errors {
	kept, next := p.errs, 0
	if len(kept) > MaxErrors {
		// Only the first lines are reported: find the last line that is,
		// and sort no more than what is on it or before it.
		lines := make([]int, len(p.errs))
		for i, e := range p.errs {
			lines[i] = e.line
		}
		slices.Sort(lines)
		last := lines[MaxErrors-1]
		kept = make([]pending, 0, MaxErrors)
		for _, e := range p.errs {
			if e.line <= last {
				kept = append(kept, e)
			}
		}
		if len(kept) < len(lines) {
			next = lines[len(kept)]
		}
	}
	slices.SortFunc(kept, func(a, b pending) int {
		if a.line != b.line {
			return a.line - b.line
		}
		return a.seq - b.seq
	})
	out := make(Errors, len(kept), len(kept)+1)
	for i, e := range kept {
		msg := fmt.Sprintf(e.format, e.args...)
		if e.known != nil {
			msg += didYouMean(e.name, e.known())
		}
		out[i] = &Error{File: p.file.Path, Line: e.line, Msg: msg}
	}
	slices.SortFunc(out, func(a, b *Error) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return strings.Compare(a.Msg, b.Msg)
	})
	if rest := len(p.errs) - len(kept); rest > 0 {
		out = append(out, &Error{File: p.file.Path, Line: next, Msg: fmt.Sprintf("%d more errors from here on not shown", rest)})
	}
	return out
}

// unknown records that name, at path, is not one of known.
func (p *parser) unknown(path []string, name string, known func() []string, format string, args ...any) {
	p.errs = append(p.errs, pending{line: p.file.line(path...), seq: len(p.errs), format: format, args: args, name: name, known: known})
}

// errorf records an error at the line of path (a section, or section and key).
func (p *parser) errorf(path []string, format string, args ...any) {
	p.errs = append(p.errs, pending{line: p.file.line(path...), seq: len(p.errs), format: format, args: args})
}

func (p *parser) section(name string, v any) {
	sec := p.schema.Section(name)
	if sec == nil {
		p.unknown([]string{name}, name, p.schema.sectionNames, "unknown section [%s]", name)
		return
	}
	tbl, ok := v.(map[string]any)
	if !ok {
		p.errorf([]string{name}, "%s must be a table ([%s]), not %s", name, name, tomlType(v))
		return
	}
	for keyName, kv := range tbl {
		def, order := p.schema.lookupKey(name, keyName)
		if def == nil {
			p.unknown([]string{name, keyName}, keyName, sec.keyNames, "unknown key %q in [%s]", keyName, name)
			continue
		}
		val, err := convert(def, kv)
		if err != nil {
			p.errorf([]string{name, keyName}, "[%s] %s: %v", name, keyName, err)
			continue
		}
		val.Def, val.section, val.order, val.file = def, name, order, p.file
		p.file.Values = append(p.file.Values, val)
	}
}

// convert checks a decoded TOML value against def and normalizes it.
func convert(def *KeyDef, v any) (Value, error) {
	var val Value
	switch def.Kind {
	case Bool:
		b, ok := v.(bool)
		if !ok {
			return val, fmt.Errorf("expected %s (true or false), got %s", def.Kind, tomlType(v))
		}
		val.Str = yesNo(b)
		return val, nil
	case String, BoolOrString:
		s, err := scalar(def, v)
		if err != nil {
			return val, err
		}
		val.Str = s
		return val, checkValue(def, s)
	case List:
		arr, ok := v.([]any)
		if !ok {
			return val, fmt.Errorf("expected %s, got %s", def.Kind, tomlType(v))
		}
		val.List = make([]string, 0, len(arr))
		for i, e := range arr {
			s, ok := e.(string)
			if !ok {
				return val, fmt.Errorf("element %d: expected a string, got %s", i+1, tomlType(e))
			}
			if err := checkValue(def, s); err != nil {
				return val, fmt.Errorf("element %d: %w", i+1, err)
			}
			val.List = append(val.List, s)
		}
		return val, nil
	case Table:
		tbl, ok := v.(map[string]any)
		if !ok {
			return val, fmt.Errorf("expected %s such as { NAME = \"value\" }, got %s", def.Kind, tomlType(v))
		}
		val.Table = make(map[string]string, len(tbl))
		for _, k := range slices.Sorted(maps.Keys(tbl)) {
			if err := checkEnvName(k); err != nil {
				return val, err
			}
			s, ok := tbl[k].(string)
			if !ok {
				return val, fmt.Errorf("%s: expected a string, got %s", k, tomlType(tbl[k]))
			}
			if err := checkValue(def, s); err != nil {
				return val, fmt.Errorf("%s: %w", k, err)
			}
			val.Table[k] = s
		}
		return val, nil
	}
	return val, fmt.Errorf("internal: unknown kind %d", def.Kind)
}

func scalar(def *KeyDef, v any) (string, error) {
	switch t := v.(type) {
	case string:
		return t, nil
	case bool:
		if def.Kind == BoolOrString {
			return yesNo(t), nil
		}
	case int64:
		if def.Int {
			return strconv.FormatInt(t, 10), nil
		}
	}
	want := def.Kind.String()
	if def.Int {
		want = "a string or an integer"
	}
	return "", fmt.Errorf("expected %s, got %s", want, tomlType(v))
}

// checkValue applies what holds for every value systemd reads from a
// key=value line, then the key's own check.
func checkValue(def *KeyDef, s string) error {
	switch {
	case strings.ContainsAny(s, "\n\r"):
		return errors.New("value contains a newline, which a systemd unit or .nspawn file cannot express")
	case strings.ContainsRune(s, 0):
		return errors.New("value contains a NUL byte")
	case !utf8.ValidString(s):
		return errors.New("value is not valid UTF-8")
	case def.Quote == Verbatim && strings.TrimSpace(s) != s:
		return fmt.Errorf("%q has leading or trailing blanks, which systemd would strip", s)
	case def.Quote == Verbatim && strings.HasSuffix(s, `\`):
		return fmt.Errorf("%q ends in a backslash, which systemd reads as a line continuation", s)
	}
	if def.Check != nil {
		return def.Check(s)
	}
	return nil
}

func checkEnvName(k string) error {
	valid := k != "" && !(k[0] >= '0' && k[0] <= '9')
	for _, r := range k {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			valid = false
		}
	}
	if !valid {
		return fmt.Errorf("%q is not a valid environment variable name", k)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a %T", v)
}
