package machine

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/internal/pool"
	"github.com/berth-project/berth/internal/registry"
	"github.com/berth-project/berth/internal/registry/registrytest"
	"github.com/berth-project/berth/testbed"
)

// signer is a gpg key made for the test, with its public keyring.
type signer struct{ home, keyring string }

func newSigner(t *testing.T) *signer {
	t.Helper()
	s := &signer{home: t.TempDir()}
	s.gpg(t, nil, "--passphrase", "", "--quick-gen-key", "berth test <test@berth.invalid>", "ed25519", "sign", "never")
	pub := s.gpg(t, nil, "--export")
	s.keyring = filepath.Join(t.TempDir(), "import-pubring.gpg")
	os.WriteFile(s.keyring, pub, 0o644)
	t.Cleanup(func() { exec.Command("gpgconf", "--homedir", s.home, "--kill", "gpg-agent").Run() })
	return s
}

func (s *signer) gpg(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("gpg", append([]string{"--homedir", s.home, "--batch", "--pinentry-mode", "loopback"}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gpg %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

func (s *signer) sign(t *testing.T, data []byte) []byte {
	return s.gpg(t, data, "--detach-sign", "-o", "-")
}

func tinyArchive(t *testing.T) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "./etc/os-release", Typeflag: tar.TypeReg, Mode: 0o644, Size: 8})
	tw.Write([]byte("ID=test\n"))
	tw.Close()
	return buf.Bytes()
}

func newManager(t *testing.T) *Manager {
	p, err := pool.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &Manager{Pool: p}
}

// TestPullVerifies pulls from a local server as importd would: signed
// SHA256SUMS by default, checksum and no as opt-outs, and refusals that
// leave nothing in the pool.
func TestPullVerifies(t *testing.T) {
	testbed.RequireRoot(t, "gpg", "gpgv")
	s := newSigner(t)
	other := newSigner(t)
	arch := tinyArchive(t)
	sum := sha256.Sum256(arch)
	sums := []byte(hex.EncodeToString(sum[:]) + "  m.tar\n" + strings.Repeat("0", 64) + "  bad.tar\n")
	files := map[string][]byte{
		"/good/m.tar": arch, "/good/SHA256SUMS": sums, "/good/SHA256SUMS.gpg": s.sign(t, sums),
		"/unsigned/m.tar": arch, "/unsigned/SHA256SUMS": sums,
		"/stranger/m.tar": arch, "/stranger/SHA256SUMS": sums, "/stranger/SHA256SUMS.gpg": other.sign(t, sums),
		"/tampered/m.tar": arch, "/tampered/SHA256SUMS": append([]byte(hex.EncodeToString(sum[:])+"  x.tar\n"), sums...),
		"/tampered/SHA256SUMS.gpg": s.sign(t, sums),
	}
	files["/good/bad.tar"] = arch
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, ok := files[r.URL.Path]; ok {
			w.Write(b)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	old := Keyrings
	defer func() { Keyrings = old }()
	Keyrings = []string{filepath.Join(t.TempDir(), "none.gpg"), s.keyring}

	m := newManager(t)
	ctx := context.Background()
	nop := func(string, int64, int64) {}
	if _, err := m.Pull(ctx, srv.URL+"/good/m.tar", "m1", VerifySignature, nop); err != nil {
		t.Fatalf("signed pull: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(m.Pool.Dir, "m1/etc/os-release")); string(b) != "ID=test\n" {
		t.Errorf("m1 holds %q", b)
	}
	var se *SignatureError
	var ce *ChecksumError
	for _, c := range []struct {
		url    string
		verify Verify
		ok     func(error) bool
	}{
		{"/unsigned/m.tar", VerifySignature, func(err error) bool { return errors.As(err, &se) && strings.Contains(se.Reason, "no signature") }},
		{"/stranger/m.tar", VerifySignature, func(err error) bool { return errors.As(err, &se) && strings.Contains(se.Reason, "does not verify") }},
		{"/tampered/m.tar", VerifySignature, func(err error) bool { return errors.As(err, &se) }},
		{"/good/bad.tar", VerifySignature, func(err error) bool { return errors.As(err, &ce) && ce.Expected != "" }},
		{"/good/missing.tar", VerifyChecksum, func(err error) bool { return errors.As(err, &ce) && ce.Expected == "" }},
	} {
		if _, err := m.Pull(ctx, srv.URL+c.url, "x", c.verify, nop); !c.ok(err) {
			t.Errorf("%s (%s): %v", c.url, c.verify, err)
		}
	}
	if _, err := m.Pull(ctx, srv.URL+"/unsigned/m.tar", "m2", VerifyChecksum, nop); err != nil {
		t.Errorf("checksum-only pull: %v", err)
	}
	if _, err := m.Pull(ctx, srv.URL+"/tampered/m.tar", "m3", VerifyNo, nop); err != nil {
		t.Errorf("unverified pull: %v", err)
	}
	Keyrings = Keyrings[:1]
	if _, err := m.Pull(ctx, srv.URL+"/good/m.tar", "x", VerifySignature, nop); !errors.As(err, &se) || !strings.Contains(se.Reason, "no keyring") {
		t.Errorf("without a keyring: %v", err)
	}
	ents, _ := os.ReadDir(m.Pool.Dir)
	var names []string
	for _, e := range ents {
		if e.Name() != pool.StateName {
			names = append(names, e.Name())
		}
	}
	if got := strings.Join(names, " "); got != "m1 m2 m3" {
		t.Errorf("the pool holds %q", got)
	}
}

// TestPullLimits: a redirect from https to http, a stalled server and a
// download past its limit all end the pull with a download error.
func TestPullLimits(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stall":
			w.Header().Set("Content-Length", "1000")
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			w.Write(bytes.Repeat([]byte("x"), 100))
		}
	}))
	defer plain.Close()
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/m.tar", http.StatusFound)
	}))
	defer tls.Close()
	oldTransport := client.Transport
	client.Transport = tls.Client().Transport
	defer func() { client.Transport = oldTransport }()

	ctx := context.Background()
	nop := func(int64, int64) {}
	err := download(ctx, tls.URL+"/m.tar", io.Discard, -1, nop)
	if !errors.Is(err, ErrDownload) || !strings.Contains(err.Error(), "redirect from https") {
		t.Errorf("https to http redirect: %v", err)
	}
	if err := download(ctx, plain.URL+"/m.tar", io.Discard, 10, nop); !errors.Is(err, ErrDownload) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("past the limit: %v", err)
	}
	if err := download(ctx, plain.URL+"/m.tar", io.Discard, 100, nop); err != nil {
		t.Errorf("at the limit: %v", err)
	}
	old := stallTimeout
	stallTimeout = 300 * time.Millisecond
	defer func() { stallTimeout = old }()
	start := time.Now()
	err = download(ctx, plain.URL+"/stall", io.Discard, -1, nop)
	if !errors.Is(err, ErrDownload) || !strings.Contains(err.Error(), "nothing received") {
		t.Errorf("stalled server: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a stall ended after %v", d)
	}
}

// A docker:// image becomes a machine whose record names the manifest
// digest it came from; a layer that reaches out of the image is refused
// with nothing left in the pool.
func TestPullImage(t *testing.T) {
	host := registrytest.Serve(t, nil)
	d := registrytest.Push(t, host, "os/base", registrytest.Layer(t, "etc/", "etc/os-release ID=oci", "usr/", "usr/lib/", "usr/lib/os-release ID=oci"))
	m := newManager(t)
	m.Registry = registrytest.Client(t, host)
	img, err := m.Pull(context.Background(), registry.Scheme+host+"/os/base:latest", "web", VerifySignature, func(string, int64, int64) {})
	if err != nil {
		t.Fatal(err)
	}
	if want := registry.Scheme + host + "/os/base@" + d.String(); img.Template != want {
		t.Errorf("origin %q, want %q", img.Template, want)
	}
	if data, _ := os.ReadFile(filepath.Join(img.Path, "etc/os-release")); string(data) != "ID=oci" {
		t.Errorf("etc/os-release: %q", data)
	}

	registrytest.Push(t, host, "os/evil", registrytest.Layer(t, "a/", "a/b/", "a/b/.wh..."))
	_, err = m.Pull(context.Background(), registry.Scheme+host+"/os/evil:latest", "evil", VerifyChecksum, func(string, int64, int64) {})
	var ue *archive.UnsafeError
	if !errors.As(err, &ue) {
		t.Errorf("escaping whiteout: %v", err)
	}
	if ents, _ := os.ReadDir(m.Pool.Dir); len(ents) != 2 { // web and berth's state
		names := []string{}
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("the pool holds %v", names)
	}
	if _, err := m.Pull(context.Background(), registry.Scheme+host+"/os/none:latest", "none", VerifyChecksum, func(string, int64, int64) {}); !errors.Is(err, ErrDownload) {
		t.Errorf("missing image: %v", err)
	}
}
