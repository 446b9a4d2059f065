// Package archive writes machine trees as tar streams and extracts them
// again, keeping what a root file system needs (numeric ownership, modes,
// times, hard links, symlinks, device nodes, extended attributes such as
// ACLs and file capabilities, sparse files) and never writing outside the
// target directory, whatever the archive says.
package archive

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Format is a compression of a tar stream.
type Format string

// Formats.
const (
	Tar  Format = "tar"
	Zstd Format = "zstd"
	Xz   Format = "xz"
	Gzip Format = "gzip"
)

// Valid reports whether f is a format Compressor knows.
func (f Format) Valid() bool {
	switch f {
	case Tar, Zstd, Xz, Gzip:
		return true
	}
	return false
}

// FormatOf picks the format from a file name: .tar, .tar.zst (default for
// unknown names), .tar.xz, .tar.gz and the short forms.
func FormatOf(name string) (Format, error) {
	switch {
	case strings.HasSuffix(name, ".tar"):
		return Tar, nil
	case strings.HasSuffix(name, ".tar.zst"), strings.HasSuffix(name, ".tzst"):
		return Zstd, nil
	case strings.HasSuffix(name, ".tar.xz"), strings.HasSuffix(name, ".txz"):
		return Xz, nil
	case strings.HasSuffix(name, ".tar.gz"), strings.HasSuffix(name, ".tgz"):
		return Gzip, nil
	}
	return "", fmt.Errorf("%s: unknown archive suffix (use .tar, .tar.zst, .tar.xz or .tar.gz)", name)
}

// Compressor wraps w so that what is written to it is compressed as f.
// zstd and xz run as their own processes with -T0: compression then runs
// beside the tree walk on every CPU, as in tar | zstd -T0, which a
// compressor in berthd's own process (klauspost/compress, kept for
// hosts without the zstd tool) trails by a third on two CPUs; no Go xz
// encoder is multi-threaded at all.
func Compressor(f Format, w io.Writer) (io.WriteCloser, error) {
	switch f {
	case Tar:
		return nopCloser{w}, nil
	case Zstd:
		if _, err := exec.LookPath("zstd"); err == nil {
			return newCmdWriter(w, "zstd", "-q", "-T0", "-c", "-")
		}
		return zstd.NewWriter(w, zstd.WithEncoderConcurrency(runtime.NumCPU()))
	case Gzip:
		return gzip.NewWriterLevel(w, gzip.DefaultCompression)
	case Xz:
		return newCmdWriter(w, "xz", "-T0", "-c", "-")
	}
	return nil, fmt.Errorf("unknown format %q", f)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// cmdWriter pipes through a compressor process.
type cmdWriter struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bytes.Buffer
}

func newCmdWriter(w io.Writer, name string, args ...string) (*cmdWriter, error) {
	cmd := exec.Command(name, args...)
	stderr := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = w, stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if f, ok := in.(*os.File); ok {
		// A larger pipe: fewer switches between berthd and the compressor
		// (best effort; the default is 64 KiB).
		unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return &cmdWriter{cmd: cmd, in: in, out: stderr}, nil
}

func (c *cmdWriter) Write(p []byte) (int, error) { return c.in.Write(p) }

// Close ends the input and waits for the process: always, so none is left.
func (c *cmdWriter) Close() error {
	c.in.Close()
	if err := c.cmd.Wait(); err != nil {
		return fmt.Errorf("%s: %w: %s", c.cmd.Path, err, strings.TrimSpace(c.out.String()))
	}
	return nil
}

// Decompressor detects the compression of r from its first bytes and
// returns the tar stream inside.
func Decompressor(r io.Reader) (io.ReadCloser, Format, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	head, _ := br.Peek(512)
	switch {
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(runtime.NumCPU()))
		if err != nil {
			return nil, "", err
		}
		return d.IOReadCloser(), Zstd, nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		cmd := exec.Command("xz", "-d", "-c", "-T0")
		cmd.Stdin = br
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, "", err
		}
		if err := cmd.Start(); err != nil {
			return nil, "", fmt.Errorf("start xz (install xz-utils): %w", err)
		}
		return &cmdReader{out, cmd}, Xz, nil
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		g, err := gzip.NewReader(br)
		if err != nil {
			return nil, "", err
		}
		return g, Gzip, nil
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		return io.NopCloser(br), Tar, nil
	}
	return nil, "", fmt.Errorf("not a tar archive, plain or compressed with zstd, xz or gzip")
}

type cmdReader struct {
	io.ReadCloser
	cmd *exec.Cmd
}

func (c *cmdReader) Close() error {
	c.ReadCloser.Close()
	if err := c.cmd.Wait(); err != nil {
		return fmt.Errorf("xz -d: %w", err)
	}
	return nil
}
