package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-project/berth/internal/archive"
)

// entry is a tar entry for layer tests: a name ending in / is a
// directory, "-> T" a symlink, "=> T" a hard link, else a file.
func layerTar(t *testing.T, entries ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		name, spec, _ := strings.Cut(e, " ")
		h := &tar.Header{Name: name, Mode: 0o644, Typeflag: tar.TypeReg}
		switch {
		case strings.HasSuffix(name, "/"):
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case strings.HasPrefix(spec, "-> "):
			h.Typeflag, h.Linkname = tar.TypeSymlink, spec[3:]
		case strings.HasPrefix(spec, "=> "):
			h.Typeflag, h.Linkname = tar.TypeLink, spec[3:]
		default:
			h.Size = int64(len(spec))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(spec))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// listing is every entry below root as "name content", "name/" or
// "name -> target".
func listing(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case rel == ".":
		case d.IsDir():
			out = append(out, rel+"/")
		case d.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out = append(out, rel+" -> "+target)
		default:
			data, _ := os.ReadFile(p)
			out = append(out, rel+" "+string(data))
		}
		return nil
	})
	return out
}

func applyLayers(t *testing.T, dir string, layers ...[]byte) error {
	t.Helper()
	for _, l := range layers {
		if err := archive.Extract(context.Background(), bytes.NewReader(l), dir, archive.Options{Layer: true}); err != nil {
			return err
		}
	}
	return nil
}

// Layers apply as image-spec says: whiteouts delete what lower layers
// made, an opaque directory keeps only this layer's entries, and an entry
// replaces whatever is in its way without writing through a hard link.
func TestLayersApply(t *testing.T) {
	dir := t.TempDir()
	base := layerTar(t,
		"etc/", "etc/keep base", "etc/gone base", "etc/dir/", "etc/dir/deep base",
		"opq/", "opq/old base", "opq/sub/", "opq/sub/x base",
		"file base", "link => file", "sym -> /etc/passwd", "dirbecomesfile/", "dirbecomesfile/x base",
		"whiteout-mark-like.wh.name base")
	upper := layerTar(t,
		"etc/", "etc/.wh.gone", "etc/.wh.dir", "etc/new upper",
		"opq/", "opq/early upper", "opq/.wh..wh..opq", "opq/late upper",
		"file/", "file/inside upper", // a directory where a file was
		"sym upper",            // a file where a symlink was
		"dirbecomesfile upper", // a file where a directory was
		"etc/.wh.never-there")
	if err := applyLayers(t, dir, base, upper); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"dirbecomesfile upper",
		"etc/", "etc/keep base", "etc/new upper",
		"file/", "file/inside upper",
		"link base", // its inode, no longer shared with file
		"opq/", "opq/early upper", "opq/late upper",
		"sym upper",
		"whiteout-mark-like.wh.name base",
	}
	if got := listing(t, dir); !slices.Equal(got, want) {
		t.Errorf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A file that replaces one of a hard-link pair gets a new inode: the other
// name keeps the old content.
func TestLayerReplacesHardLinkedFile(t *testing.T) {
	dir := t.TempDir()
	if err := applyLayers(t, dir, layerTar(t, "a base", "b => a"), layerTar(t, "a upper")); err != nil {
		t.Fatal(err)
	}
	if got := listing(t, dir); !slices.Equal(got, []string{"a upper", "b base"}) {
		t.Errorf("tree: %q", got)
	}
}

// Whiteouts that would reach out of their directory, or name nothing,
// are refused; whatever a layer does stays inside the target.
func TestLayerWhiteoutRefusals(t *testing.T) {
	for _, bad := range []string{"a/b/.wh...", "a/.wh..", "a/.wh.", "a/.wh..wh.other", ".wh..wh..wh."} {
		parent := t.TempDir()
		dir := filepath.Join(parent, "image")
		os.Mkdir(dir, 0o755)
		os.WriteFile(filepath.Join(parent, "outside"), []byte("host"), 0o644)
		err := applyLayers(t, dir, layerTar(t, "a/", "a/b/", "a/b/c base", "a/x base"), layerTar(t, bad))
		var ue *archive.UnsafeError
		if !errors.As(err, &ue) {
			t.Errorf("%s: err = %v, want a refusal", bad, err)
		}
		if got := listing(t, dir); !slices.Equal(got, []string{"a/", "a/b/", "a/b/c base", "a/x base"}) {
			t.Errorf("%s: tree changed: %q", bad, got)
		}
	}
	// A whiteout of a name through a symlink that leads out: os.Root keeps
	// it inside, and the host file stays.
	parent := t.TempDir()
	dir := filepath.Join(parent, "image")
	os.Mkdir(dir, 0o755)
	os.WriteFile(filepath.Join(parent, "outside"), []byte("host"), 0o644)
	err := applyLayers(t, dir, layerTar(t, "up -> .."), layerTar(t, "up/.wh.outside"))
	if err == nil {
		t.Error("a whiteout through a symlink out of the image was applied")
	}
	if data, _ := os.ReadFile(filepath.Join(parent, "outside")); string(data) != "host" {
		t.Error("the file outside the image was removed")
	}
}

// A directory removed in the middle of a layer and made again gets what
// follows: no descriptor kept of the removed one (the writers keep some,
// and a whiteout or a replacement may remove what they name) receives it.
func TestLayerRemovedDirectoryMadeAgain(t *testing.T) {
	for i := range 20 { // the writers take files in any order
		dir := t.TempDir()
		var files []string
		for j := range 8 {
			files = append(files, "a/b/f"+string(rune('0'+j))+" upper")
		}
		upper := layerTar(t, append(append([]string{"a/", "a/b/"}, files...),
			".wh.a", "a/", "a/b/", "a/b/new upper", "a/b/c -> x", "a/b/d/", "a/b/d/e upper",
			"s/", "s/t upper", "s upper", // replaced: a file where the directory was
			"p/", "p/x/", "p/x/y upper", "p upper",
			"q/", "q/r upper")...)
		if err := applyLayers(t, dir, layerTar(t, "a/", "a/b/", "a/b/old base"), upper); err != nil {
			t.Fatal(err)
		}
		want := []string{"a/", "a/b/", "a/b/c -> x", "a/b/d/", "a/b/d/e upper", "a/b/new upper", "p upper", "q/", "q/r upper", "s upper"}
		if got := listing(t, dir); !slices.Equal(got, want) {
			t.Fatalf("run %d: tree:\n%s\nwant:\n%s", i, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}
