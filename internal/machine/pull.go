package machine

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
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

// Pull downloads the archive at rawURL into the pool's directory (hidden),
// checks it against the SHA256SUMS next to it unless verify is false, and
// imports it as machine name.
func (m *Manager) Pull(ctx context.Context, rawURL, name string, verify bool, progress func(phase string, done, total int64)) (*Image, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s: %w: not an http(s) URL", rawURL, ErrDownload)
	}
	var want string
	if verify {
		sums := *u
		sums.Path = path.Join(path.Dir(u.Path), "SHA256SUMS")
		if want, err = expectedSum(ctx, sums.String(), path.Base(u.Path)); err != nil {
			if errors.Is(err, errNoEntry) {
				return nil, &ChecksumError{URL: rawURL}
			}
			return nil, err
		}
	}
	f, err := os.CreateTemp(m.Pool.Dir, ".#berth-pull-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	if err := download(ctx, rawURL, io.MultiWriter(f, h), func(d, t int64) { progress("download", d, t) }); err != nil {
		return nil, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); verify && got != want {
		return nil, &ChecksumError{URL: rawURL, Expected: want, Actual: got}
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return m.Import(ctx, f.Name(), name, func(d, t int64) { progress("import", d, t) })
}

var errNoEntry = errors.New("no SHA256SUMS entry")

func get(ctx context.Context, rawURL string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", rawURL, ErrDownload, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", rawURL, ErrDownload, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %w: %s", rawURL, ErrDownload, resp.Status)
	}
	return resp, nil
}

// expectedSum reads the line for file from a SHA256SUMS file
// ("HEX  NAME" or "HEX *NAME").
func expectedSum(ctx context.Context, sumsURL, file string) (string, error) {
	resp, err := get(ctx, sumsURL)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<20))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && strings.TrimPrefix(f[1], "*") == file && len(f[0]) == 64 {
			return strings.ToLower(f[0]), nil
		}
	}
	return "", errNoEntry
}

func download(ctx context.Context, rawURL string, w io.Writer, progress func(done, total int64)) error {
	resp, err := get(ctx, rawURL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	buf := make([]byte, 1<<20)
	var done int64
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			done += int64(n)
			progress(done, resp.ContentLength)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%s: %w: %v", rawURL, ErrDownload, rerr)
		}
	}
	if resp.ContentLength >= 0 && done != resp.ContentLength {
		return fmt.Errorf("%s: %w: got %d of %d bytes", rawURL, ErrDownload, done, resp.ContentLength)
	}
	return nil
}
