package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/testbed"
)

// describe lists every entry below root with everything an image must
// keep: type, mode, owner, mtime, content, link target, device, xattrs,
// hard-link group and whether a file is sparse.
func describe(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	inodes := map[uint64]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		unix.Lstat(p, &st)
		line := fmt.Sprintf("%s type=%o mode=%o owner=%d:%d", rel, st.Mode&unix.S_IFMT, st.Mode&0o7777, st.Uid, st.Gid)
		if st.Mode&unix.S_IFMT != unix.S_IFLNK && rel != "." {
			line += fmt.Sprintf(" mtime=%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, _ := os.ReadFile(p)
			line += fmt.Sprintf(" size=%d sum=%x sparse=%v", len(data), sum(data), st.Blocks*512 < st.Size/2)
			if st.Nlink > 1 {
				if first, ok := inodes[st.Ino]; ok {
					line += " hardlink-of=" + first
				} else {
					inodes[st.Ino] = rel
				}
			}
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" dev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			buf := make([]byte, 4096)
			n, _ := unix.Llistxattr(p, buf)
			names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
			sort.Strings(names)
			for _, x := range names {
				if x == "" {
					continue
				}
				v := make([]byte, 4096)
				m, _ := unix.Lgetxattr(p, x, v)
				line += fmt.Sprintf(" xattr:%s=%x", x, v[:m])
			}
		}
		out = append(out, line)
		return nil
	})
	return out
}

func sum(b []byte) uint64 {
	var h uint64 = 14695981039346656037
	for _, c := range b {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

// tree builds a small root file system with every kind of entry and
// attribute an image has.
func tree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "dev"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "tmp"), 0o755))
	must(os.Chmod(filepath.Join(root, "tmp"), 0o1777|os.ModeSticky))
	must(os.WriteFile(filepath.Join(root, "usr/bin/tool"), bytes.Repeat([]byte("tool "), 20000), 0o755))
	must(os.Chmod(filepath.Join(root, "usr/bin/tool"), 0o4755|os.ModeSetuid))
	must(os.WriteFile(filepath.Join(root, "usr/bin/ping"), []byte("ping"), 0o755))
	// security.capability for cap_net_raw+ep (VFS_CAP_REVISION_2).
	capv := []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	must(unix.Setxattr(filepath.Join(root, "usr/bin/ping"), "security.capability", capv, 0))
	must(unix.Setxattr(filepath.Join(root, "usr/bin/tool"), "user.note", []byte("kept"), 0))
	must(os.WriteFile(filepath.Join(root, "owned"), []byte("x"), 0o640))
	must(os.Lchown(filepath.Join(root, "owned"), 1234, 5678))
	must(os.Link(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "usr/bin/tool-link")))
	must(os.Symlink("tool", filepath.Join(root, "usr/bin/rel-link")))
	must(os.Symlink("/etc/passwd", filepath.Join(root, "abs-link")))
	must(os.Lchown(filepath.Join(root, "abs-link"), 42, 42))
	must(unix.Mknod(filepath.Join(root, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mkfifo(filepath.Join(root, "fifo"), 0o600))
	// A chroot's device node outside /dev (BIND, postfix), with an ACL.
	must(os.MkdirAll(filepath.Join(root, "var/spool/postfix/dev"), 0o755))
	must(unix.Mknod(filepath.Join(root, "var/spool/postfix/dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(exec.Command("setfacl", "-m", "u:4321:rw", filepath.Join(root, "var/spool/postfix/dev/null")).Run())
	must(unix.Setxattr(filepath.Join(root, "var/spool"), "user.dir-note", []byte("dirs too"), 0))
	f, err := os.Create(filepath.Join(root, "sparse"))
	must(err)
	must(f.Truncate(64 << 20))
	f.WriteAt([]byte("end"), 64<<20-3)
	f.Close()
	// Files that end in a hole, small (written by Extract's writers) and
	// large (by Extract itself): only a truncate gives them their size.
	for name, size := range map[string]int64{"hole-end-small": 192 << 10, "hole-end-large": 1 << 20} {
		must(os.WriteFile(filepath.Join(root, name), []byte("start"), 0o644))
		must(os.Truncate(filepath.Join(root, name), size))
	}
	// A small file with a hole between two runs of data.
	middle := append(append(bytes.Repeat([]byte{7}, 64<<10), make([]byte, 64<<10)...), bytes.Repeat([]byte{9}, 70<<10)...)
	must(os.WriteFile(filepath.Join(root, "hole-middle-small"), middle, 0o644))
	// Many small files in several directories, written in parallel, each
	// with its own content, mode and owner.
	for i := range 300 {
		dir := filepath.Join(root, "many", fmt.Sprint(i%7))
		must(os.MkdirAll(dir, 0o755))
		p := filepath.Join(dir, fmt.Sprintf("f%03d", i))
		must(os.WriteFile(p, bytes.Repeat([]byte{byte(i%255 + 1)}, i*97), 0o600))
		must(os.Chmod(p, os.FileMode(0o400+i%0o300)))
		must(os.Lchown(p, i, 1000+i))
	}
	// A hard link whose target is a small file queued just before it.
	must(os.Link(filepath.Join(root, "many/6/f293"), filepath.Join(root, "many/zz-link")))
	// A POSIX ACL (system.posix_acl_access) and a default ACL on a directory.
	must(exec.Command("setfacl", "-m", "u:1234:r", filepath.Join(root, "owned")).Run())
	must(exec.Command("setfacl", "-d", "-m", "g:5678:rx", filepath.Join(root, "usr")).Run())
	return root
}

// roundTrip writes the tree at src as format f and extracts it into a
// new directory, which it returns.
func roundTrip(t *testing.T, src string, f archive.Format, o archive.Options) string {
	t.Helper()
	var buf bytes.Buffer
	cw, err := archive.Compressor(f, &buf)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := archive.Write(context.Background(), root, cw, o); err != nil {
		t.Fatal(err)
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	r, got, err := archive.Decompressor(&buf)
	if err != nil || got != f {
		t.Fatalf("detected %q, %v", got, err)
	}
	defer r.Close()
	dst := t.TempDir()
	if err := archive.Extract(context.Background(), r, dst, o); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestRoundTripEveryFormat(t *testing.T) {
	testbed.RequireRoot(t, "xz", "setfacl")
	src := tree(t)
	want := describe(t, src)
	for _, f := range []archive.Format{archive.Tar, archive.Zstd, archive.Xz, archive.Gzip} {
		t.Run(string(f), func(t *testing.T) {
			dst := roundTrip(t, src, f, archive.Options{})
			if got := describe(t, dst); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("tree differs after %s round trip:\n got:\n%s\nwant:\n%s", f, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestXattrAllowList: attributes outside the allow-list (trusted.*, here)
// stay home unless asked for, both when writing and when extracting.
func TestXattrAllowList(t *testing.T) {
	testbed.RequireRoot(t, "setfacl")
	src := tree(t)
	file := "usr/bin/ping"
	if err := unix.Setxattr(filepath.Join(src, file), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	has := func(dir, name string) bool {
		_, err := unix.Getxattr(filepath.Join(dir, file), name, nil)
		return err == nil
	}
	dst := roundTrip(t, src, archive.Tar, archive.Options{})
	if has(dst, "trusted.overlay.opaque") {
		t.Error("trusted.* crossed by default")
	}
	if !has(dst, "security.capability") {
		t.Error("security.capability did not cross")
	}
	if dst := roundTrip(t, src, archive.Tar, archive.Options{AllXattrs: true}); !has(dst, "trusted.overlay.opaque") {
		t.Error("trusted.* did not cross when asked for")
	}
	// An archive that carries one (written with AllXattrs) is read
	// without it by default.
	var buf bytes.Buffer
	root, _ := os.Open(src)
	defer root.Close()
	if err := archive.Write(context.Background(), root, &buf, archive.Options{AllXattrs: true}); err != nil {
		t.Fatal(err)
	}
	dst = t.TempDir()
	if err := archive.Extract(context.Background(), &buf, dst, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	if has(dst, "trusted.overlay.opaque") || !has(dst, "security.capability") {
		t.Error("Extract did not apply the allow-list")
	}
}

// hostile builds a tar stream from entries.
func hostile(t *testing.T, entries ...tar.Header) []byte { return hostileBytes(entries...) }

func TestHostileArchives(t *testing.T) {
	testbed.RequireRoot(t)
	outside := t.TempDir()
	os.Chmod(outside, 0o700)
	target := filepath.Join(outside, "victim")
	os.WriteFile(target, []byte("safe"), 0o644)
	reg := func(name string) tar.Header { return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644} }
	cases := map[string][]byte{
		"dotdot":            hostile(t, reg("../../../../"+target)),
		"absolute":          hostile(t, reg(target)),
		"symlink-write":     hostile(t, tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside}, reg("link/victim")),
		"symlink-dir-write": hostile(t, tar.Header{Name: "d", Typeflag: tar.TypeSymlink, Linkname: "../../../../../" + outside}, reg("d/new")),
		"hardlink-out":      hostile(t, tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: target}),
		"symlink-then-dir": hostile(t, tar.Header{Name: "d", Typeflag: tar.TypeSymlink, Linkname: outside},
			tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o777}),
		"hardlink-dotdot":   hostile(t, tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../../../.." + target}),
		"truncated":         hostile(t, reg("a"))[:514],
		"no-end-blocks":     noEnd(hostile(t, reg("a"), reg("b")), 2),
		"lone-zero-block":   noEnd(hostile(t, reg("a")), 1),
		"empty-zstd":        emptyZstd(t),
		"too-deep":          hostile(t, reg(strings.Repeat("d/", 1024)+"f")),
		"duplicate-file":    hostile(t, reg("a"), reg("a")),
		"file-then-dir":     hostile(t, reg("a"), tar.Header{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755}),
		"huge-size":         hostile(t, tar.Header{Name: "big", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644})[:2048],
		"garbage":           bytes.Repeat([]byte("not an archive "), 100),
		"wrong-compression": append([]byte{0x28, 0xb5, 0x2f, 0xfd}, bytes.Repeat([]byte{0xff}, 600)...),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			dst := t.TempDir()
			r, _, err := archive.Decompressor(bytes.NewReader(data))
			if err == nil {
				err = archive.Extract(context.Background(), r, dst, archive.Options{})
				r.Close()
			}
			if err == nil {
				t.Fatal("hostile archive accepted")
			}
			var ue *archive.UnsafeError
			t.Logf("refused: %v (unsafe: %v)", err, errors.As(err, &ue))
			if b, _ := os.ReadFile(target); string(b) != "safe" {
				t.Fatalf("%s was overwritten", target)
			}
			ents, _ := os.ReadDir(outside)
			if len(ents) != 1 {
				t.Fatalf("something was written outside: %v", ents)
			}
			if fi, _ := os.Stat(outside); fi.Mode().Perm() != 0o700 {
				t.Fatalf("the mode of %s changed to %v", outside, fi.Mode())
			}
		})
	}
}

// noEnd cuts n of the two end-of-archive blocks off a tar stream.
func noEnd(b []byte, n int) []byte { return b[:len(b)-n*512] }

// emptyZstd is a well-formed zstd stream with nothing in it.
func emptyZstd(t *testing.T) []byte {
	var buf bytes.Buffer
	z, err := archive.Compressor(archive.Zstd, &buf)
	if err != nil {
		t.Fatal(err)
	}
	z.Close()
	return buf.Bytes()
}

var _ = io.EOF

// TestACLsAsGNUTarWritesThem: an archive of GNU tar --acls (text records,
// no binary xattrs) restores the same ACLs; berth's own archives carry
// both forms, so that libarchive (systemd 258's importd and later) reads
// them too.
func TestACLsAsGNUTarWritesThem(t *testing.T) {
	testbed.RequireRoot(t, "tar", "setfacl")
	src := tree(t)
	acl := func(dir, p, name string) string {
		b := make([]byte, 256)
		n, err := unix.Getxattr(filepath.Join(dir, p), name, b)
		if err != nil {
			return ""
		}
		return fmt.Sprintf("%x", b[:n])
	}
	cmd := exec.Command("tar", "--acls", "--numeric-owner", "-C", src, "-cf", "-", ".")
	data, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("SCHILY.xattr.system.posix_acl")) || !bytes.Contains(data, []byte("SCHILY.acl.access")) {
		t.Fatal("GNU tar wrote ACLs in another form than this test expects")
	}
	dst := t.TempDir()
	if err := archive.Extract(context.Background(), bytes.NewReader(data), dst, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"owned", "system.posix_acl_access"}, {"usr", "system.posix_acl_default"}} {
		want := acl(src, c[0], c[1])
		if want == "" || acl(dst, c[0], c[1]) != want {
			t.Errorf("%s %s: %s, want %s", c[0], c[1], acl(dst, c[0], c[1]), want)
		}
	}
	// berth's archive holds both forms.
	var buf bytes.Buffer
	root, _ := os.Open(src)
	defer root.Close()
	if err := archive.Write(context.Background(), root, &buf, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		if h.Name == "./owned" && (h.PAXRecords["SCHILY.acl.access"] != "user::rw-,user:1234:r--,group::r--,mask::r--,other::---" || h.PAXRecords["SCHILY.xattr.system.posix_acl_access"] == "") {
			t.Errorf("./owned: %q", h.PAXRecords)
		}
	}
}

// TestLibarchiveReadsACLs: bsdtar (libarchive, what systemd 258's importd
// and later use) restores berth's ACLs and the modes beside them.
func TestLibarchiveReadsACLs(t *testing.T) {
	testbed.RequireRoot(t, "bsdtar", "setfacl")
	src := tree(t)
	var buf bytes.Buffer
	root, _ := os.Open(src)
	defer root.Close()
	if err := archive.Write(context.Background(), root, &buf, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	cmd := exec.Command("bsdtar", "--acls", "--numeric-owner", "-xpf", "-", "-C", dst)
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bsdtar: %v\n%s", err, out)
	}
	for _, c := range [][2]string{{"owned", "system.posix_acl_access"}, {"usr", "system.posix_acl_default"}} {
		want, _ := getxattr(filepath.Join(src, c[0]), c[1])
		got, _ := getxattr(filepath.Join(dst, c[0]), c[1])
		if want == "" || got != want {
			t.Errorf("%s %s: %x, want %x", c[0], c[1], got, want)
		}
		sfi, _ := os.Stat(filepath.Join(src, c[0]))
		dfi, _ := os.Stat(filepath.Join(dst, c[0]))
		if sfi.Mode() != dfi.Mode() {
			t.Errorf("%s: mode %v, want %v", c[0], dfi.Mode(), sfi.Mode())
		}
	}
}

func getxattr(p, name string) (string, error) {
	b := make([]byte, 1024)
	n, err := unix.Getxattr(p, name, b)
	if err != nil {
		return "", err
	}
	return string(b[:n]), nil
}
