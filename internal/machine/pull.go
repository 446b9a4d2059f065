package machine

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/registry"
)

// ErrDownload is a failed download.
var ErrDownload = errors.New("download failed")

// ChecksumError is an archive whose SHA-256 is not the one SHA256SUMS
// lists (Expected is empty when it lists none).
type ChecksumError struct{ URL, Expected, Actual string }

func (e *ChecksumError) Error() string {
	if e.Expected == "" {
		return fmt.Sprintf("%s: no entry in SHA256SUMS", e.URL)
	}
	return fmt.Sprintf("%s: SHA-256 %s, SHA256SUMS says %s", e.URL, e.Actual, e.Expected)
}

// SignatureError is a SHA256SUMS whose signature is missing or does not
// verify against the keyring.
type SignatureError struct{ URL, Reason string }

func (e *SignatureError) Error() string { return fmt.Sprintf("%s: %s", e.URL, e.Reason) }

// Verify is how much of a download Pull checks, importd's modes.
type Verify string

const (
	// VerifySignature checks the archive against SHA256SUMS and
	// SHA256SUMS against SHA256SUMS.gpg with the import keyring.
	VerifySignature Verify = "signature"
	// VerifyChecksum checks the archive against SHA256SUMS only, which
	// proves the download whole, not who made it.
	VerifyChecksum Verify = "checksum"
	// VerifyNo checks nothing.
	VerifyNo Verify = "no"
)

// Keyrings are where the keys that sign images are looked for, the
// admin's first, as systemd-importd does.
var Keyrings = []string{
	"/etc/systemd/import-pubring.pgp", "/etc/systemd/import-pubring.gpg",
	"/usr/lib/systemd/import-pubring.pgp", "/usr/lib/systemd/import-pubring.gpg",
}

// maxSmall bounds SHA256SUMS and its signature.
const maxSmall = 1 << 20

// stallTimeout ends a download that receives nothing for this long, as
// importd's curl low-speed limit does.
var stallTimeout = 60 * time.Second

// Pull downloads the archive at rawURL into an unnamed file in the pool,
// checks it as verify says and imports it as machine name. The download
// may not exceed the pool's free space, may not stall for a minute and
// may not be redirected from https to http; whatever fails, and even if
// berthd is killed, nothing is left.
//
// A docker:// reference is pulled from an OCI registry instead, every blob
// checked against its digest whatever verify says.
func (m *Manager) Pull(ctx context.Context, rawURL, name string, verify Verify, progress func(phase string, done, total int64)) (*Image, error) {
	if strings.HasPrefix(rawURL, registry.Scheme) {
		return m.pullImage(ctx, rawURL, name, progress)
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s: %w: not an http(s) URL", rawURL, ErrDownload)
	}
	var want string
	if verify != VerifyNo {
		sums := *u
		sums.Path = path.Join(path.Dir(u.Path), "SHA256SUMS")
		sumsData, err := fetchSmall(ctx, sums.String())
		if err != nil {
			return nil, err
		}
		if verify == VerifySignature {
			sig := sums
			sig.Path += ".gpg"
			if err := verifySignature(ctx, sig.String(), sumsData); err != nil {
				return nil, err
			}
		}
		if want = expectedSum(sumsData, path.Base(u.Path)); want == "" {
			return nil, &ChecksumError{URL: rawURL}
		}
	}
	f, err := m.downloadFile()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st unix.Statfs_t
	limit := int64(-1)
	if unix.Fstatfs(int(f.Fd()), &st) == nil {
		limit = int64(st.Bavail) * st.Bsize
	}
	h := sha256.New()
	if err := download(ctx, rawURL, io.MultiWriter(f, h), limit, func(d, t int64) { progress("download", d, t) }); err != nil {
		return nil, noSpace(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); verify != VerifyNo && got != want {
		return nil, &ChecksumError{URL: rawURL, Expected: want, Actual: got}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return m.ImportFrom(ctx, f, name, false, func(d, t int64) { progress("import", d, t) })
}

// downloadFile is a file without a name in the pool (O_TMPFILE), which
// vanishes with berthd; a named one, unlinked at once, where the file
// system has none.
func (m *Manager) downloadFile() (*os.File, error) {
	fd, err := unix.Open(m.Pool.Dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(m.Pool.Dir, "(download)")), nil
	}
	f, err := os.CreateTemp(m.Pool.Dir, ".#berth-pull-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

// client refuses redirects from https to anything else and gives up on
// servers that do not answer.
var client = &http.Client{
	Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSHandshakeTimeout: stallTimeout,
	},
	CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("more than 10 redirects")
		}
		if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("refusing the redirect from https to %s", req.URL.Redacted())
		}
		return nil
	},
}

func get(ctx context.Context, rawURL string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", rawURL, ErrDownload, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", rawURL, ErrDownload, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %w: %s", rawURL, ErrDownload, resp.Status)
	}
	return resp, nil
}

// fetchSmall downloads a file of at most maxSmall bytes.
func fetchSmall(ctx context.Context, rawURL string) ([]byte, error) {
	var buf bytes.Buffer
	if err := download(ctx, rawURL, &buf, maxSmall, func(int64, int64) {}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// expectedSum is the hash SHA256SUMS lists for file ("HEX  NAME" or
// "HEX *NAME"), or "".
func expectedSum(sums []byte, file string) string {
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && strings.TrimPrefix(f[1], "*") == file && len(f[0]) == 64 {
			return strings.ToLower(f[0])
		}
	}
	return ""
}

// verifySignature checks the detached signature at sigURL over sums with
// the first keyring of Keyrings there is, by gpgv or else sqv.
func verifySignature(ctx context.Context, sigURL string, sums []byte) error {
	keyring := ""
	for _, k := range Keyrings {
		if _, err := os.Stat(k); err == nil {
			keyring = k
			break
		}
	}
	if keyring == "" {
		return &SignatureError{sigURL, "no keyring to check it with (/etc/systemd/import-pubring.gpg); install one, or pull with verify checksum"}
	}
	sig, err := fetchSmall(ctx, sigURL)
	if err != nil {
		return &SignatureError{sigURL, fmt.Sprintf("no signature: %v", errors.Unwrap(err))}
	}
	dir, err := os.MkdirTemp("", "berth-verify-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sumsPath, sigPath := filepath.Join(dir, "SHA256SUMS"), filepath.Join(dir, "SHA256SUMS.gpg")
	if err := os.WriteFile(sumsPath, sums, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(sigPath, sig, 0o600); err != nil {
		return err
	}
	var cmd *exec.Cmd
	if gpgv, err := exec.LookPath("gpgv"); err == nil {
		cmd = exec.CommandContext(ctx, gpgv, "--homedir", dir, "--keyring", keyring, sigPath, sumsPath)
	} else if sqv, err := exec.LookPath("sqv"); err == nil {
		cmd = exec.CommandContext(ctx, sqv, "--keyring", keyring, sigPath, sumsPath)
	} else {
		return &SignatureError{sigURL, "neither gpgv nor sqv is installed"}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &SignatureError{sigURL, fmt.Sprintf("does not verify with %s: %s", keyring, lastLine(out))}
	}
	return nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// download copies rawURL to w, at most limit bytes (unless limit < 0),
// giving up when nothing arrives for stallTimeout.
func download(ctx context.Context, rawURL string, w io.Writer, limit int64, progress func(done, total int64)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errStalled := fmt.Errorf("%s: %w: nothing received for %v", rawURL, ErrDownload, stallTimeout)
	stall := time.AfterFunc(stallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	resp, err := get(ctx, rawURL)
	if err != nil {
		if context.Cause(ctx) == errStalled {
			return errStalled
		}
		return err
	}
	defer resp.Body.Close()
	tooLarge := func() error {
		return fmt.Errorf("%s: %w: larger than the %d bytes allowed (the pool's free space)", rawURL, ErrDownload, limit)
	}
	if limit >= 0 && resp.ContentLength > limit {
		return tooLarge()
	}
	buf := make([]byte, 1<<20)
	var done int64
	for {
		stall.Reset(stallTimeout)
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if done += int64(n); limit >= 0 && done > limit {
				return tooLarge()
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			progress(done, resp.ContentLength)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if cause := context.Cause(ctx); cause == errStalled {
				return errStalled
			}
			return fmt.Errorf("%s: %w: %v", rawURL, ErrDownload, rerr)
		}
	}
	if resp.ContentLength >= 0 && done != resp.ContentLength {
		return fmt.Errorf("%s: %w: got %d of %d bytes", rawURL, ErrDownload, done, resp.ContentLength)
	}
	return nil
}
