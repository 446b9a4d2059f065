package conf

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"golang.org/x/tools/txtar"
)

// quickCases must be decoded by quickDecode itself.
var quickCases = []string{
	"",
	"# only a comment\n",
	"[Exec]\n",
	"[Exec]\nBoot = true\n",
	"[ Exec ]  # header comment\n\tBoot=false#c\n",
	"[Exec]\nParameters = [\"/usr/sbin/nginx\", \"-g\", \"daemon off;\"]\n",
	"[Exec]\nParameters = [\n  \"a\", # one\n  'b',\n\n  # two\n]\n",
	"[Exec]\nParameters = []\n",
	"[Exec]\nEnvironment = { TZ = \"UTC\", LANG='C' }\n",
	"[Exec]\nEnvironment = {}\n",
	"[Exec]\nEnvironment = {TZ=\"UTC\"}\n",
	`[Exec]
Parameters = ["tab\there", "q\"uote", "back\\slash", "$HOME %i", 'C:\path', "nl\n", "\r\b\f"]
`,
	"[Service]\nTasksMax = 42\nA = -0\nB = +7\nC = 0\nD = -9223372036854775808\n",
	"[Files]\nBind = [1, \"x\", true]\n",
	"[A]\nk = 1\n[B]\nk = 2\n[a]\n",
	"[Exec]\nBoot = true", // no newline at the end
}

// slowCases must be left to the library (which accepts some and rejects
// others).
var slowCases = []string{
	"Boot = true\n",                         // root key
	"[Exec.Sub]\n",                          // dotted header
	"[\"Exec\"]\n",                          // quoted header
	"[[Exec]]\n",                            // array of tables
	"[Exec]\n[Exec]\n",                      // duplicate table
	"[Exec]\nBoot = true\nBoot = false\n",   // duplicate key
	"[Exec]\nBoot = true [Files]\n",         // junk after a value
	"[Exec] Boot = true\n",                  // key on the header line
	"[Exec]\nBoot = True\n",                 // not a boolean
	"[Exec]\nBoot = truee\n",                //
	"[Exec]\nA = 1_000\n",                   // underscores
	"[Exec]\nA = 0x10\n",                    // hex
	"[Exec]\nA = 012\n",                     // leading zero
	"[Exec]\nA = 1.5\n",                     // float
	"[Exec]\nA = 1979-05-27\n",              // date
	"[Exec]\nA = 9223372036854775808\n",     // overflow
	"[Exec]\nA = \"\\u00e9\"\n",             // \u escape
	"[Exec]\nA = \"\\e\"\n",                 // TOML 1.1 escape
	"[Exec]\nA = \"\"\"multi\nline\"\"\"\n", // multi-line string
	"[Exec]\nA = '''x'''\n",                 //
	"[Exec]\nA = \"open\n",                  // unterminated
	"[Exec]\nA = 'open\n",                   //
	"[Exec]\nA = [[\"nested\"]]\n",          // nested array
	"[Exec]\nA = [{ a = 1 }]\n",             // table in an array
	"[Exec]\nA = { a = [1] }\n",             // array in an inline table
	"[Exec]\nA = { a = 1, }\n",              // trailing comma (TOML 1.1)
	"[Exec]\nA = { a = 1,\n b = 2 }\n",      // newline (TOML 1.1)
	"[Exec]\nA = { a = 1, a = 2 }\n",        // duplicate
	"[Exec]\nA = { a.b = 1 }\n",             // dotted key
	"[Exec]\nA = [1 2]\n",                   // missing comma
	"[Exec]\nA = \n",                        // missing value
	"[Exec]\nA\n",                           //
	"[Exec]\r\nA = 1\r\n",                   // CRLF
	"[Exec]\nA = \"é\"\n",                   // not ASCII
	"[Exec]\nA = \"\x01\"\n",                // control character
	"\ufeff[Exec]\n",                        // byte order mark
}

func TestQuickDecodeAgreesWithLibrary(t *testing.T) {
	for _, src := range quickCases {
		got, ok := quickDecode([]byte(src))
		if !ok {
			t.Errorf("quickDecode gave up on %q", src)
			continue
		}
		checkAgrees(t, []byte(src), got)
	}
	for _, src := range slowCases {
		if _, ok := quickDecode([]byte(src)); ok {
			t.Errorf("quickDecode decoded %q; that is the library's job", src)
		}
	}
}

// The files berth's own tests and benchmark use take the quick path.
func TestQuickDecodeTakesBerthFiles(t *testing.T) {
	files := berthFiles(t, false)
	if len(files) < 8 {
		t.Fatalf("found only %d TOML files in testdata", len(files))
	}
	for name, src := range files {
		got, ok := quickDecode(src)
		if !ok {
			t.Errorf("%s: quickDecode gave up", name)
			continue
		}
		checkAgrees(t, src, got)
	}
}

// FuzzQuickDecode checks that whatever quickDecode decodes, the library
// decodes the same way.
func FuzzQuickDecode(f *testing.F) {
	for _, s := range append(quickCases, slowCases...) {
		f.Add([]byte(s))
	}
	for _, src := range berthFiles(f, true) {
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		if got, ok := quickDecode(src); ok {
			checkAgrees(t, src, got)
		}
	})
}

func checkAgrees(t testing.TB, src []byte, got map[string]any) {
	t.Helper()
	var want map[string]any
	if _, err := toml.Decode(string(src), &want); err != nil {
		t.Fatalf("quickDecode accepted what the library rejects (%v):\n%s", err, src)
	}
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("quickDecode and the library disagree on\n%s\nquick:   %#v\nlibrary: %#v", src, got, want)
	}
}

// berthFiles returns the TOML files in the generator's golden tests and the
// benchmark's machine; the broken ones of errors.txtar only if asked.
func berthFiles(t testing.TB, broken bool) map[string][]byte {
	bench, err := os.ReadFile("../bench/machine.toml")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"bench/machine.toml": bench}
	paths, _ := filepath.Glob("../generator/testdata/*.txtar")
	for _, p := range paths {
		if !broken && filepath.Base(p) == "errors.txtar" {
			continue
		}
		ar, err := txtar.ParseFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range ar.Files {
			// "-> TARGET" stands for a symlink there.
			if strings.HasSuffix(f.Name, ".toml") && !strings.HasPrefix(string(f.Data), "-> ") {
				files[p+":"+f.Name] = f.Data
			}
		}
	}
	return files
}
