package generator

import (
	"bytes"
	"io"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/berth-project/berth/conf"
)

// TestRoundTrip checks that the rendered files parse back, with go-systemd's
// independent parser, into exactly the options rendered: no line is split,
// continued or lost.
func TestRoundTrip(t *testing.T) {
	src := `[Machine]
Enable = true
[Exec]
Boot = false
Parameters = ["/bin/sh", "-c", "x\\", "# not a comment", "; nor this", "[Section]"]
Environment = { A = "trailing backslash \\" }
[Files]
Bind = ["/a:/b"]
[Unit]
Description = "50% \\ %n"
[Service]
Environment = { B = "x\\" }
`
	f, err := conf.Parse("/etc/berth/machines/rt.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	m, err := conf.Merge("rt", []*conf.File{f})
	if err != nil {
		t.Fatal(err)
	}
	out, err := Convert(m, Paths{UnitDir: "/usr/lib/systemd/system", BinDir: "/usr/bin"})
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range []File{out.Nspawn, out.DropIn} {
		opts, err := unit.DeserializeOptions(bytes.NewReader(file.Content))
		if err != nil {
			t.Fatalf("%s: %v", file.Path, err)
		}
		var again bytes.Buffer
		again.WriteString(string(file.Content[:bytes.Index(file.Content, []byte("\n\n"))+2]))
		body, _ := io.ReadAll(unit.Serialize(opts))
		again.Write(body)
		if again.String() != string(file.Content) {
			t.Errorf("%s does not round-trip:\n%s\n---\n%s", file.Path, file.Content, again.String())
		}
	}
	if out.WantsLink != "machines.target.wants/systemd-nspawn@rt.service" || out.LinkTarget != "/usr/lib/systemd/system/systemd-nspawn@.service" {
		t.Errorf("link %s -> %s", out.WantsLink, out.LinkTarget)
	}
}
