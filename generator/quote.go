package generator

import (
	"strings"

	"github.com/berth-project/berth/conf"
)

// quoteWord quotes one element so that systemd's word splitting for the
// key gives it back unchanged.
func quoteWord(q conf.Quoting, s string) string {
	switch q {
	case conf.StrvWords:
		// config_parse_strv() unquotes with backslash kept literal, so only a
		// single quote needs care: close, emit it double-quoted, reopen — the
		// pieces join into one word as in a shell.
		return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
	case conf.CWords:
		// Unit-file Environment= decodes C escapes inside double quotes.
		r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
		return `"` + r.Replace(s) + `"`
	}
	return s
}

// escapeSpecifiers doubles % for keys whose values systemd expands
// specifiers in, so a literal % arrives as written.
func escapeSpecifiers(s string) string { return strings.ReplaceAll(s, "%", "%%") }
