package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/internal/image"
	"github.com/berth-project/berth/testbed"
)

// WriteDiff against the template a btrfs snapshot was made from holds
// only what changed, and applied as a layer over the template's own
// layer it rebuilds the snapshot exactly.
func TestWriteDiffRebuildsSnapshot(t *testing.T) {
	mnt := testbed.LoopBtrfs(t, 256<<20)
	tmpl := filepath.Join(mnt, "tmpl")
	sh := func(script string) {
		t.Helper()
		if out, err := exec.Command("sh", "-ec", script).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
	}
	sh("btrfs -q subvolume create " + tmpl + " && cd " + tmpl + ` &&
		mkdir -p etc/keep usr/lib gone/deep && echo a > etc/a && echo b > etc/b && echo big > usr/lib/big &&
		echo x > gone/deep/x && ln -s usr/lib lib && echo same > etc/keep/same && ln etc/a etc/a-link`)
	clone := filepath.Join(mnt, "clone")
	sh("btrfs -q subvolume snapshot " + tmpl + " " + clone + " && cd " + clone + ` &&
		echo changed > etc/a && rm etc/b && rm -r gone && mkdir new && echo n > new/n && chmod 600 etc/keep/same &&
		rm lib && mkdir lib`)
	if err := unix.Setxattr(filepath.Join(clone, "usr/lib/big"), "user.berth", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}

	open := func(p string) *os.File {
		f, err := image.OpenTree(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	var full, diff bytes.Buffer
	if err := archive.Write(context.Background(), open(tmpl), &full, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := archive.WriteDiff(context.Background(), open(tmpl), open(clone), &diff, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	names := tarNames(t, diff.Bytes())
	for _, want := range []string{"./etc/a", "./etc/.wh.b", "./.wh.gone", "./new/", "./new/n", "./etc/keep/same", "./lib/", "./usr/lib/big"} {
		if !slices.Contains(names, want) {
			t.Errorf("the diff lacks %s: %q", want, names)
		}
	}
	for _, unwanted := range []string{"./etc/keep/", "./usr/", "./gone/deep/x"} {
		if slices.Contains(names, unwanted) {
			t.Errorf("the diff holds unchanged %s", unwanted)
		}
	}
	out := filepath.Join(mnt, "out")
	os.Mkdir(out, 0o755)
	for _, l := range [][]byte{full.Bytes(), diff.Bytes()} {
		if err := archive.Extract(context.Background(), bytes.NewReader(l), out, archive.Options{Layer: true}); err != nil {
			t.Fatal(err)
		}
	}
	got, want := describe(t, out), describe(t, clone)
	// Directory times move as layers apply; the rest must be equal.
	strip := func(lines []string) []string {
		var r []string
		for _, l := range lines {
			if strings.Contains(l, " type=40000 ") {
				l = l[:strings.Index(l, " mtime=")+1]
			}
			r = append(r, l)
		}
		return r
	}
	if g, w := strip(got), strip(want); !slices.Equal(g, w) {
		t.Errorf("rebuilt tree differs:\n%s\n---- want\n%s", strings.Join(g, "\n"), strings.Join(w, "\n"))
	}
}

func tarNames(t *testing.T, b []byte) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}
