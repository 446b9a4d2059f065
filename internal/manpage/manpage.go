// Package manpage reads berth's man page sources (man/*.md, the markdown
// go-md2man renders) so that tests can hold each page against the code it
// documents: the verbs and options of a command, the keys of a file format,
// the methods and errors of an interface.
package manpage

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/berth-project/berth/testbed"
)

// Page is one man page source, split at its headings.
type Page struct {
	Name     string // berth.machine
	Section  string // 5
	Sections []Section
}

// Section is the text under one heading, up to the next heading of the
// same or a higher level.
type Section struct {
	Level int    // 2 for ##, 3 for ###
	Title string // as written
	Body  []string
}

// Term is a definition list entry: a line starting with a bold name, and
// the lines after it that start with ": " and continue it.
type Term struct {
	Name string // the bold text: a key, an option, a method
	Rest string // what follows the bold text on its line
	Def  string // the definition, joined into one line
}

// Dir is the man/ directory of the source tree a test runs in.
func Dir() (string, error) {
	root, err := testbed.SourceRoot()
	return filepath.Join(root, "man"), err
}

// Read reads man/FILE (such as "berth.1.md").
func Read(file string) (*Page, error) {
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, file))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := &Page{}
	sc := bufio.NewScanner(f)
	inCode := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		switch {
		case !inCode && p.Name == "" && strings.HasPrefix(line, "% "):
			fields := strings.Fields(line[2:])
			if len(fields) >= 2 {
				p.Name, p.Section = fields[0], fields[1]
			}
		case !inCode && strings.HasPrefix(line, "#"):
			level := len(line) - len(strings.TrimLeft(line, "#"))
			p.Sections = append(p.Sections, Section{Level: level, Title: strings.TrimSpace(line[level:])})
		case len(p.Sections) > 0:
			s := &p.Sections[len(p.Sections)-1]
			s.Body = append(s.Body, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if p.Name == "" {
		return nil, fmt.Errorf("%s: no title line (%% NAME SECTION)", file)
	}
	return p, nil
}

// Under returns the sections of the given level below the first section
// titled title (case-insensitively), up to the next one of its level.
func (p *Page) Under(title string, level int) []Section {
	var out []Section
	in := false
	for _, s := range p.Sections {
		switch {
		case in && s.Level < level:
			return out
		case strings.EqualFold(s.Title, title):
			in = true
		case in && s.Level == level:
			out = append(out, s)
		}
	}
	return out
}

// Find returns the first section titled title (case-insensitively).
func (p *Page) Find(title string) (Section, bool) {
	for _, s := range p.Sections {
		if strings.EqualFold(s.Title, title) {
			return s, true
		}
	}
	return Section{}, false
}

// Terms returns the definition list entries of a section.
func (s Section) Terms() []Term {
	var out []Term
	inDef := false // the last term's definition goes on until a blank line
	for _, line := range s.Body {
		switch {
		case line == "":
			inDef = false
		case strings.HasPrefix(line, "**") && !inDef:
			end := strings.Index(line[2:], "**")
			if end < 0 {
				continue
			}
			out = append(out, Term{Name: line[2 : 2+end], Rest: strings.TrimSpace(line[4+end:])})
			inDef = false
		case len(out) > 0 && (strings.HasPrefix(line, ": ") || inDef):
			t := &out[len(out)-1]
			t.Def = strings.TrimSpace(t.Def + " " + strings.TrimPrefix(line, ": "))
			inDef = true
		}
	}
	return out
}

// CheckOptions compares the OPTIONS section of a page with the options of
// a command.
func CheckOptions(file string, fs *flag.FlagSet) error {
	page, err := Read(file)
	if err != nil {
		return err
	}
	s, ok := page.Find("OPTIONS")
	if !ok {
		return fmt.Errorf("%s has no OPTIONS section", file)
	}
	var have, doc []string
	fs.VisitAll(func(f *flag.Flag) { have = append(have, "--"+f.Name) })
	for _, t := range s.Terms() {
		doc = append(doc, t.Name)
	}
	slices.Sort(have)
	slices.Sort(doc)
	if !slices.Equal(have, doc) {
		return fmt.Errorf("%s documents options %q; %s has %q", file, doc, fs.Name(), have)
	}
	return nil
}
