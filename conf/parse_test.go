package conf

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string // each expected line of the error, in order
	}{
		{"syntax", "[Exec]\nBoot = \n", []string{"f.toml:2: TOML syntax error: "}},
		{"unknown section", "[Exce]\nBoot = true\n", []string{`f.toml:1: unknown section [Exce]; did you mean "Exec"?`}},
		{"unknown key", "[Exec]\nBoot = true\nParamters = []\n", []string{`f.toml:3: unknown key "Paramters" in [Exec]; did you mean "Parameters"?`}},
		{"unknown key, no suggestion", "[Files]\nZZZZZZZZZZ = 1\n", []string{`f.toml:2: unknown key "ZZZZZZZZZZ" in [Files]`}},
		{"case typo", "[exec]\n", []string{`f.toml:1: unknown section [exec]; did you mean "Exec"?`}},
		{"wrong type bool", "[Exec]\nBoot = \"yes\"\n", []string{`f.toml:2: [Exec] Boot: expected a boolean (true or false), got a string`}},
		{"wrong type list", "[Exec]\nParameters = \"/bin/sh\"\n", []string{`f.toml:2: [Exec] Parameters: expected an array of strings, got a string`}},
		{"list element", "[Files]\nBind = [\"/a\", 3]\n", []string{`f.toml:2: [Files] Bind: element 2: expected a string, got an integer`}},
		{"int not allowed", "[Exec]\nHostname = 3\n", []string{`f.toml:2: [Exec] Hostname: expected a string, got an integer`}},
		{"int allowed", "[Service]\nMemoryMax = 1.5\n", []string{`f.toml:2: [Service] MemoryMax: expected a string or an integer, got a float`}},
		{"newline", "[Exec]\nParameters = [\"a\\nb\"]\n", []string{`f.toml:2: [Exec] Parameters: element 1: value contains a newline`}},
		{"blanks", "[Files]\nBind = [\" /a\"]\n", []string{`f.toml:2: [Files] Bind: element 1: " /a" has leading or trailing blanks`}},
		{"trailing backslash", "[Unit]\nDescription = 'x\\'\n", []string{`f.toml:2: [Unit] Description: "x\\" ends in a backslash`}},
		{"enum", "[Service]\nRestart = \"sometimes\"\n", []string{`f.toml:2: [Service] Restart: "sometimes" is not one of no, on-success`}},
		{"env name", "[Exec]\nEnvironment = { \"A-B\" = \"x\" }\n", []string{`f.toml:2: [Exec] Environment: "A-B" is not a valid environment variable name`}},
		{"env table type", "[Exec]\nEnvironment = [\"A=b\"]\n", []string{`f.toml:2: [Exec] Environment: expected a table of strings such as { NAME = "value" }, got an array`}},
		{"template name", "[Machine]\nTemplate = \"-bad\"\n", []string{`f.toml:2: [Machine] Template: invalid machine name "-bad"`}},
		{"hostname", "[Exec]\nHostname = \"a_b\"\n", []string{`f.toml:2: [Exec] Hostname: "a_b" is not a valid hostname`}},
		{"unit dep", "[Unit]\nAfter = [\"network\"]\n", []string{`f.toml:2: [Unit] After: element 1: "network" is not a unit name`}},
		{"percent", "[Service]\nCPUQuota = \"50\"\n", []string{`f.toml:2: [Service] CPUQuota: "50" is not a percentage`}},
		{"abs path", "[Exec]\nWorkingDirectory = \"srv\"\n", []string{`f.toml:2: [Exec] WorkingDirectory: "srv" is not an absolute path`}},
		{"section not table", "Exec = 1\n", []string{`f.toml:1: Exec must be a table ([Exec]), not an integer`}},
		{"dotted key line", "Exec.Boot = 1\n", []string{`f.toml:1: [Exec] Boot: expected a boolean`}},
		{"inline table line", "\n\nExec = { Bot = true }\n", []string{`f.toml:3: unknown key "Bot" in [Exec]; did you mean "Boot"?`}},
		{"all errors, by line", "[Exec]\nBoot = 1\nHostname = 2\n[Nope]\n", []string{
			"f.toml:2: [Exec] Boot", "f.toml:3: [Exec] Hostname", "f.toml:4: unknown section [Nope]"}},
		{"multiline string skipped", "[Exec]\nUser = \"\"\"\n[Fake]\nx\"\"\"\nBot = 1\n", []string{"f.toml:2: [Exec] User: value contains a newline", `f.toml:5: unknown key "Bot"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.toml", []byte(tc.src))
			if err == nil {
				t.Fatal("no error")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("error %d:\n got %s\nwant %s…", i+1, lines[i], w)
				}
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	src := `[Machine]
Enable = true
[Exec]
Boot = false
PrivateUsers = "pick"
Parameters = ["/bin/sh", "-c", "echo hi"]
Environment = { TZ = "UTC" }
[Files]
Volatile = false
[Service]
MemoryMax = 536870912
TasksMax = "80%"
`
	f, err := Parse("f.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ sec, key, want string }{
		{"Machine", "Enable", "yes"}, {"Exec", "Boot", "no"}, {"Exec", "PrivateUsers", "pick"},
		{"Files", "Volatile", "no"}, {"Service", "MemoryMax", "536870912"}, {"Service", "TasksMax", "80%"},
	}
	for _, c := range checks {
		if got, _ := f.Get(c.sec, c.key); got.Str != c.want {
			t.Errorf("%s.%s = %q, want %q", c.sec, c.key, got.Str, c.want)
		}
	}
	if got, _ := f.Get("Exec", "Parameters"); strings.Join(got.List, "|") != "/bin/sh|-c|echo hi" || got.Pos().Line != 6 {
		t.Errorf("Parameters = %+v", got)
	}
	if got, _ := f.Get("Exec", "Environment"); got.Table["TZ"] != "UTC" {
		t.Errorf("Environment = %v", got.Table)
	}
}

func TestMachineName(t *testing.T) {
	valid := []string{"web", "web-1", "a.b.c", "A9", strings.Repeat("a", 64)}
	invalid := []string{"", ".host", "-web", "web-", "a..b", ".a", "a.", "a_b", "a b", "a/b", "ü", strings.Repeat("a", 65), "a.-b"}
	for _, n := range valid {
		if err := ValidateMachineName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range invalid {
		if err := ValidateMachineName(n); err == nil {
			t.Errorf("%q accepted", n)
		}
	}
}

func TestDidYouMean(t *testing.T) {
	keys := []string{"Parameters", "Environment", "Boot"}
	for got, want := range map[string]string{"Paramters": "Parameters", "environment": "Environment", "Bot": "Boot", "Xyzzy": ""} {
		s := didYouMean(got, keys)
		if want == "" && s != "" || want != "" && !strings.Contains(s, `"`+want+`"`) {
			t.Errorf("didYouMean(%q) = %q, want %q", got, s, want)
		}
	}
}

// TestManyErrorsCounted: a file of many bad keys reports the first
// MaxErrors by line, with hints, and counts the rest.
func TestManyErrorsCounted(t *testing.T) {
	var src strings.Builder
	src.WriteString("[Exec]\n")
	for i := range 10000 {
		fmt.Fprintf(&src, "Boto%d = true\n", i)
	}
	_, err := Parse("f.toml", []byte(src.String()))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != MaxErrors+1 {
		t.Fatalf("%d errors, want %d and a count: %v", len(errs), MaxErrors, err)
	}
	if errs[0].Line != 2 || !strings.Contains(errs[0].Msg, `did you mean "Boot"?`) {
		t.Errorf("first error: %v", errs[0])
	}
	last := errs[MaxErrors]
	if last.Line != MaxErrors+2 || !strings.Contains(last.Msg, fmt.Sprint(10000-MaxErrors)+" more errors") {
		t.Errorf("the count: %v", last)
	}
}
