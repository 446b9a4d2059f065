package conf

import (
	"strconv"
)

// quickDecode decodes the plain TOML a berth file is usually written in —
// [Section] headers, bare keys, strings, booleans, integers, arrays of those
// and one-line inline tables, in ASCII — into what BurntSushi/toml's Decode
// would return for it, about ten times faster. It gives up (ok false) on
// anything else, and on anything that might be an error, so the library
// stays the authority on TOML and the only source of error messages: the
// generator parses every file at every boot, and the library's parser is
// most of its time. FuzzQuickDecode checks that the two always agree.
func quickDecode(src []byte) (raw map[string]any, ok bool) {
	for _, c := range src {
		if !(c >= 0x20 && c < 0x7f || c == '\t' || c == '\n') {
			return nil, false
		}
	}
	q := quick{src: src}
	raw = map[string]any{}
	var table map[string]any
	for {
		q.blank()
		if q.eof() {
			return raw, true
		}
		if q.peek() == '[' {
			q.i++
			q.space()
			name := q.bareKey()
			q.space()
			if name == "" || !q.take(']') || !q.endOfLine() {
				return nil, false
			}
			if _, dup := raw[name]; dup {
				return nil, false
			}
			table = map[string]any{}
			raw[name] = table
			continue
		}
		// Keys before the first header are root keys; leave them to the
		// library, like everything else this does not expect.
		if table == nil {
			return nil, false
		}
		key, val, ok := q.keyValue(true)
		if !ok || !q.endOfLine() {
			return nil, false
		}
		if _, dup := table[key]; dup {
			return nil, false
		}
		table[key] = val
	}
}

type quick struct {
	src []byte
	i   int
}

func (q *quick) eof() bool  { return q.i >= len(q.src) }
func (q *quick) peek() byte { return q.src[q.i] }

func (q *quick) take(c byte) bool {
	if !q.eof() && q.peek() == c {
		q.i++
		return true
	}
	return false
}

// space skips blanks within a line.
func (q *quick) space() {
	for !q.eof() && (q.peek() == ' ' || q.peek() == '\t') {
		q.i++
	}
}

// comment skips a comment up to (not over) the end of its line.
func (q *quick) comment() {
	if q.take('#') {
		for !q.eof() && q.peek() != '\n' {
			q.i++
		}
	}
}

// blank skips blanks, comments and newlines.
func (q *quick) blank() {
	for {
		q.space()
		q.comment()
		if !q.take('\n') {
			return
		}
	}
}

// endOfLine accepts blanks and a comment up to the end of the line or file.
func (q *quick) endOfLine() bool {
	q.space()
	q.comment()
	return q.eof() || q.take('\n')
}

func (q *quick) bareKey() string {
	start := q.i
	for !q.eof() {
		c := q.peek()
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			break
		}
		q.i++
	}
	return string(q.src[start:q.i])
}

// keyValue reads `key = value`; top says whether value may be an array or
// inline table.
func (q *quick) keyValue(top bool) (string, any, bool) {
	key := q.bareKey()
	q.space()
	if key == "" || !q.take('=') {
		return "", nil, false
	}
	q.space()
	if q.eof() {
		return "", nil, false
	}
	var val any
	var ok bool
	switch {
	case top && q.peek() == '[':
		val, ok = q.array()
	case top && q.peek() == '{':
		val, ok = q.inlineTable()
	default:
		val, ok = q.scalar()
	}
	return key, val, ok
}

func (q *quick) scalar() (any, bool) {
	if q.eof() {
		return nil, false
	}
	switch c := q.peek(); {
	case c == '"':
		return q.basicString()
	case c == '\'':
		return q.literalString()
	case c == 't' || c == 'f':
		for _, w := range []string{"true", "false"} {
			if len(q.src)-q.i >= len(w) && string(q.src[q.i:q.i+len(w)]) == w {
				q.i += len(w)
				return w == "true", q.endsValue()
			}
		}
	case c == '+' || c == '-' || c >= '0' && c <= '9':
		return q.integer()
	}
	return nil, false
}

// endsValue says whether the value just read ends here, rather than being
// the start of something longer (a float, a date, a bare word).
func (q *quick) endsValue() bool {
	if q.eof() {
		return true
	}
	switch q.peek() {
	case ' ', '\t', '\n', ',', ']', '}', '#':
		return true
	}
	return false
}

// integer reads a plain decimal integer; underscores, other bases, floats
// and dates are left to the library.
func (q *quick) integer() (any, bool) {
	start := q.i
	if q.peek() == '+' || q.peek() == '-' {
		q.i++
	}
	digits := q.i
	for !q.eof() && q.peek() >= '0' && q.peek() <= '9' {
		q.i++
	}
	n := q.i - digits
	if n == 0 || n > 1 && q.src[digits] == '0' || !q.endsValue() {
		return nil, false
	}
	v, err := strconv.ParseInt(string(q.src[start:q.i]), 10, 64)
	return v, err == nil
}

func (q *quick) basicString() (any, bool) {
	q.i++ // "
	if len(q.src)-q.i >= 2 && q.src[q.i] == '"' && q.src[q.i+1] == '"' {
		return nil, false // """ multi-line
	}
	start := q.i
	var b []byte // only when there are escapes
	for !q.eof() {
		c := q.peek()
		switch c {
		case '"':
			s := string(q.src[start:q.i])
			if b != nil {
				s = string(append(b, q.src[start:q.i]...))
			}
			q.i++
			return s, q.endsValue()
		case '\n':
			return nil, false
		case '\\':
			if q.i+1 >= len(q.src) {
				return nil, false
			}
			var r byte
			switch q.src[q.i+1] {
			case '"', '\\':
				r = q.src[q.i+1]
			case 'n':
				r = '\n'
			case 't':
				r = '\t'
			case 'r':
				r = '\r'
			case 'b':
				r = '\b'
			case 'f':
				r = '\f'
			default:
				return nil, false // \u, \U and the like: the library's job
			}
			b = append(append(b, q.src[start:q.i]...), r)
			q.i += 2
			start = q.i
			continue
		}
		q.i++
	}
	return nil, false
}

func (q *quick) literalString() (any, bool) {
	q.i++ // '
	if len(q.src)-q.i >= 2 && q.src[q.i] == '\'' && q.src[q.i+1] == '\'' {
		return nil, false // ''' multi-line
	}
	start := q.i
	for !q.eof() {
		switch q.peek() {
		case '\'':
			s := string(q.src[start:q.i])
			q.i++
			return s, q.endsValue()
		case '\n':
			return nil, false
		}
		q.i++
	}
	return nil, false
}

// array reads an array of scalars, over several lines if need be.
func (q *quick) array() (any, bool) {
	q.i++ // [
	arr := []any{}
	for {
		q.blank()
		if q.take(']') {
			return arr, q.endsValue()
		}
		v, ok := q.scalar()
		if !ok {
			return nil, false
		}
		arr = append(arr, v)
		q.blank()
		if q.take(']') {
			return arr, q.endsValue()
		}
		if !q.take(',') {
			return nil, false
		}
	}
}

// inlineTable reads a one-line { key = scalar, ... } without a trailing
// comma, which is all TOML 1.0 allows.
func (q *quick) inlineTable() (any, bool) {
	q.i++ // {
	tbl := map[string]any{}
	q.space()
	if q.take('}') {
		return tbl, q.endsValue()
	}
	for {
		q.space()
		k, v, ok := q.keyValue(false)
		if !ok {
			return nil, false
		}
		if _, dup := tbl[k]; dup {
			return nil, false
		}
		tbl[k] = v
		q.space()
		if q.take('}') {
			return tbl, q.endsValue()
		}
		if !q.take(',') {
			return nil, false
		}
	}
}
