package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/archive"
)

// FuzzExtract extracts any bytes as an archive (plain or compressed), and
// as an image layer over one whose symlinks lead out: whatever it holds,
// nothing appears next to the targets, the file there keeps its content,
// and Extract returns within seconds.
func FuzzExtract(f *testing.F) {
	reg := func(name string) tar.Header { return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644} }
	for _, seed := range [][]byte{
		hostileBytes(reg("a"), tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, tar.Header{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: "../.."}),
		hostileBytes(tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"}, reg("l/x")),
		hostileBytes(reg("a"), tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "a"}, tar.Header{Name: "n", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}),
		hostileBytes(tar.Header{Name: "x", Typeflag: tar.TypeReg, Format: tar.FormatPAX, PAXRecords: map[string]string{"SCHILY.xattr.user.a": "b", "SCHILY.xattr.trusted.c": "d"}}),
		hostileBytes(reg("up/.wh.victim"), reg("abs/.wh..wh..opq"), reg("d/.wh.x"), reg(".wh.up")),
		{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58, 0x01, 0x00, 0x00},
		{0x1f, 0x8b, 0x08, 0x00},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		outer := t.TempDir()
		victim := filepath.Join(outer, "victim")
		os.WriteFile(victim, []byte("safe"), 0o644)
		dst, layered := filepath.Join(outer, "dst"), filepath.Join(outer, "layered")
		os.Mkdir(dst, 0o700)
		os.Mkdir(layered, 0o700)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := archive.Extract(ctx, bytes.NewReader(fuzzBase), layered, archive.Options{Layer: true}); err != nil {
			t.Fatal(err)
		}
		for _, o := range []struct {
			dir string
			o   archive.Options
		}{{dst, archive.Options{}}, {layered, archive.Options{Layer: true}}} {
			r, _, err := archive.Decompressor(bytes.NewReader(data))
			if err == nil {
				archive.Extract(ctx, r, o.dir, o.o)
				r.Close()
			}
		}
		if ctx.Err() != nil {
			t.Fatal("Extract ran past its deadline")
		}
		if b, _ := os.ReadFile(victim); string(b) != "safe" {
			t.Fatal("the file next to the target changed")
		}
		if ents, _ := os.ReadDir(outer); len(ents) != 3 {
			t.Fatalf("something appeared next to the target: %v", ents)
		}
	})
}

// fuzzBase is the lower layer FuzzExtract applies its input over: a
// directory and symlinks out of the image, to the parent and to /.
var fuzzBase = hostileBytes(tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, tar.Header{Name: "d/x", Typeflag: tar.TypeReg, Mode: 0o644},
	tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: ".."}, tar.Header{Name: "abs", Typeflag: tar.TypeSymlink, Linkname: "/"})

// hostileBytes builds a tar stream from entries; a regular file without
// a size gets four bytes of data.
func hostileBytes(entries ...tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = 4
		}
		tw.WriteHeader(&h)
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte("evil"))
		}
	}
	tw.Close()
	return buf.Bytes()
}
