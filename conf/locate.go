package conf

import (
	"strings"
)

// locator finds the line a key was written on. BurntSushi/toml reports lines
// for syntax and type errors only, so for the rest we scan the source: table
// headers and "key =" lines are enough to place every key of our schema,
// whether written as [Exec] Boot = …, Exec.Boot = … or Exec = { Boot = … }.
type locator struct {
	// lines maps a key path ("Exec.Boot", or "Exec" for a header or
	// inline table) to the first line that shows it: one lookup per error,
	// so a file of many bad keys costs time linear in its size.
	lines map[string]int
}

func newLocator(src []byte) *locator {
	l := &locator{lines: map[string]int{}}
	add := func(path string, line int) {
		if _, ok := l.lines[path]; !ok {
			l.lines[path] = line
		}
	}
	table := ""
	inMultiline := ""
	for i, raw := range strings.Split(string(src), "\n") {
		line := strings.TrimSpace(raw)
		if inMultiline != "" {
			if strings.Contains(line, inMultiline) {
				inMultiline = ""
			}
			continue
		}
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '[':
			name := strings.Trim(line, "[] \t")
			if end := strings.IndexByte(name, ']'); end >= 0 {
				name = name[:end]
			}
			table = normalizeKey(name)
			add(table, i+1)
		default:
			eq := strings.IndexByte(line, '=')
			if eq <= 0 {
				continue
			}
			key := normalizeKey(line[:eq])
			if table != "" {
				key = table + "." + key
			}
			add(key, i+1)
			for _, q := range []string{`"""`, `'''`} {
				if strings.Count(line[eq:], q) == 1 {
					inMultiline = q
				}
			}
		}
	}
	return l
}

// normalizeKey turns `"Exec" . Boot` into Exec.Boot.
func normalizeKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// line returns the line of the most specific entry for path (a key, else its
// section), or 0 if the file does not show it.
func (l *locator) line(path ...string) int {
	var stack [128]byte // a file of many bad keys looks up each: no garbage
	for n := len(path); n > 0; n-- {
		key := stack[:0]
		for i, p := range path[:n] {
			if i > 0 {
				key = append(key, '.')
			}
			key = append(key, p...)
		}
		if line, ok := l.lines[string(key)]; ok {
			return line
		}
	}
	return 0
}
