// Package registry pulls images from OCI registries (the distribution
// protocol Docker Hub, Quay, GHCR and Debian's docker-registry speak)
// through go-containerregistry, which does the protocol, the manifests and
// the digests: berth writes none of that by hand. What it adds is what a
// root daemon owes its host: credentials and CAs where podman keeps them,
// blobs cached by digest, bounds on size and time, and layers applied
// through berth's own extraction, which nothing in a layer gets out of.
package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-project/berth/internal/archive"
)

// Scheme starts an image reference, as skopeo and podman name the transport.
const Scheme = "docker://"

// StallTimeout ends a transfer that receives nothing for this long.
var StallTimeout = 60 * time.Second

// Errors a pull reports, for the varlink layer to name.
var (
	ErrReference = errors.New("not an image reference")
	ErrDownload  = errors.New("download failed")
	ErrAuth      = errors.New("the registry refused the credentials")
	ErrNotFound  = errors.New("no such image")
)

// PlatformError is an image index with no image for this host.
type PlatformError struct {
	Ref       string
	Platform  string
	Available []string
}

func (e *PlatformError) Error() string {
	return fmt.Sprintf("%s has no image for %s (it has %s)", e.Ref, e.Platform, strings.Join(e.Available, ", "))
}

// DigestError is a blob whose content does not have the digest the
// manifest names.
type DigestError struct{ Ref, Expected, Actual string }

func (e *DigestError) Error() string {
	return fmt.Sprintf("%s: a layer's content has digest %s, the manifest says %s", e.Ref, e.Actual, e.Expected)
}

// ParseRef reads docker://REGISTRY/REPO:TAG or @DIGEST.
func ParseRef(s string) (name.Reference, error) {
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return nil, fmt.Errorf("%q: %w (docker://REGISTRY/REPOSITORY:TAG or @sha256:DIGEST)", s, ErrReference)
	}
	ref, err := name.ParseReference(rest)
	if err != nil {
		return nil, fmt.Errorf("%q: %w: %v", s, ErrReference, err)
	}
	return ref, nil
}

// Client pulls images from registries and pushes them.
type Client struct {
	Config Config
	// CacheDir keeps blobs as blobs/sha256/HEX, shared by every image.
	CacheDir string
	// Platform is the image picked from an index; this host's when empty.
	Platform *v1.Platform
}

// Image is what Pull resolved and applied.
type Image struct {
	Ref    string // docker://REGISTRY/REPO@sha256:… of the manifest applied
	Digest string
	Layers int
	Bytes  int64 // compressed bytes of its layers
	Cached int64 // of which were in the cache already
}

// Pull resolves rawRef, fetches the image's layers into the cache (those
// it lacks), checks each against its digest and applies them in order to
// dir, an empty directory. limit bounds the bytes downloaded (< 0: none).
func (p *Client) Pull(ctx context.Context, rawRef, dir string, limit int64, progress func(phase string, done, total int64)) (*Image, error) {
	ref, err := ParseRef(rawRef)
	if err != nil {
		return nil, err
	}
	// Every request of the pull runs under this context (the registry
	// client keeps the one it resolved with): a stall cancels them all.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	img, digest, index, err := p.resolve(ctx, rawRef, ref)
	if err != nil {
		return nil, err
	}
	// Nothing is downloaded before the policy accepts the image, signed
	// itself or through its index.
	signed := []v1.Hash{digest}
	if index.Hex != "" {
		signed = append(signed, index)
	}
	if err := p.checkPolicy(ctx, rawRef, ref, signed); err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, p.fail(rawRef, err)
	}
	res := &Image{Ref: Scheme + ref.Context().Name() + "@" + digest.String(), Digest: digest.String(), Layers: len(layers)}
	var total int64
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return nil, p.fail(rawRef, err)
		}
		total += n
	}
	res.Bytes = total
	var done int64
	for i, l := range layers {
		fetched, err := p.fetch(ctx, cancel, rawRef, l, &limit, dir, func(n int64) { progress("download", done+n, total) })
		if err != nil {
			var de *DigestError
			if errors.As(err, &de) || errors.Is(err, ErrDownload) || errors.Is(err, ErrAuth) || errors.Is(err, ErrNotFound) {
				return nil, err
			}
			return nil, fmt.Errorf("%s: layer %d of %d: %w", rawRef, i+1, len(layers), err)
		}
		n, _ := l.Size()
		done += n
		if fetched == 0 {
			res.Cached += n
		}
	}
	return res, nil
}

// resolve fetches the manifest rawRef names and, for an index, picks the
// image for the platform; it returns the image's digest and the index's
// (zero without one).
func (p *Client) resolve(ctx context.Context, rawRef string, ref name.Reference) (v1.Image, v1.Hash, v1.Hash, error) {
	ref, opts, err := p.options(ctx, rawRef, ref, nil)
	if err != nil {
		return nil, v1.Hash{}, v1.Hash{}, err
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, v1.Hash{}, v1.Hash{}, p.fail(rawRef, err)
	}
	plat := p.platform()
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return nil, v1.Hash{}, v1.Hash{}, p.fail(rawRef, err)
		}
		return img, desc.Digest, v1.Hash{}, nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, v1.Hash{}, v1.Hash{}, p.fail(rawRef, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, v1.Hash{}, v1.Hash{}, p.fail(rawRef, err)
	}
	var avail []string
	for _, m := range im.Manifests {
		if m.Platform == nil {
			continue
		}
		if m.Platform.Satisfies(plat) {
			img, err := idx.Image(m.Digest)
			if err != nil {
				return nil, v1.Hash{}, v1.Hash{}, p.fail(rawRef, err)
			}
			return img, m.Digest, desc.Digest, nil
		}
		avail = append(avail, m.Platform.String())
	}
	if len(avail) == 0 {
		avail = []string{"no platform at all"}
	}
	return nil, v1.Hash{}, v1.Hash{}, &PlatformError{Ref: rawRef, Platform: plat.String(), Available: avail}
}

// options are how to reach ref's registry: the reference (marked
// insecure where registries.conf says so), TLS, credentials, and wrap
// around the transport if given.
func (p *Client) options(ctx context.Context, rawRef string, ref name.Reference, wrap func(http.RoundTripper) http.RoundTripper) (name.Reference, []remote.Option, error) {
	reg := ref.Context().RegistryStr()
	insecure, err := p.Config.Insecure(reg)
	if err != nil {
		return nil, nil, err
	}
	if insecure {
		if ref, err = name.ParseReference(strings.TrimPrefix(rawRef, Scheme), name.Insecure); err != nil {
			return nil, nil, fmt.Errorf("%q: %w: %v", rawRef, ErrReference, err)
		}
	}
	var tr http.RoundTripper
	if tr, err = p.Config.Transport(reg, insecure); err != nil {
		return nil, nil, err
	}
	if wrap != nil {
		tr = wrap(tr)
	}
	return ref, []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(tr),
		remote.WithAuthFromKeychain(p.Config.Keychain(ref.Context().Name())),
		remote.WithUserAgent("berth"),
	}, nil
}

func (p *Client) platform() v1.Platform {
	if p.Platform != nil {
		return *p.Platform
	}
	pl := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if runtime.GOARCH == "arm" {
		pl.Variant = "v7"
	}
	return pl
}

// fail names what the registry said in berth's terms.
func (p *Client) fail(rawRef string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case 401, 403:
			return fmt.Errorf("%s: %w: %v", rawRef, ErrAuth, te)
		case 404:
			return fmt.Errorf("%s: %w: %v", rawRef, ErrNotFound, te)
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%s: %w: %v", rawRef, ErrDownload, err)
}

// blobPath is where the cache keeps a blob.
func (p *Client) blobPath(d v1.Hash) (string, error) {
	if d.Algorithm != "sha256" || len(d.Hex) != 64 || strings.Trim(d.Hex, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%w: unsupported digest %q", ErrDownload, d.String())
	}
	return filepath.Join(p.CacheDir, "blobs", "sha256", d.Hex), nil
}

// fetch applies layer l over dir: from the cache if it is there, else as
// it downloads, into the cache beside. The blob is written under a
// temporary name and renamed once its SHA-256 is the digest the manifest
// names; what was applied of a blob that turns out wrong is in the
// caller's temporary tree, which the caller removes. The blob is not
// synced (an fsync was a tenth of a pull): a cached blob is checked
// against its digest again before it is used, and one that a crash left
// torn is fetched afresh. It returns the bytes downloaded.
func (p *Client) fetch(ctx context.Context, cancel context.CancelCauseFunc, rawRef string, l v1.Layer, limit *int64, dir string, progress func(int64)) (fetched int64, err error) {
	d, err := l.Digest()
	if err != nil {
		return 0, p.fail(rawRef, err)
	}
	final, err := p.blobPath(d)
	if err != nil {
		return 0, err
	}
	if f, err := os.Open(final); err == nil {
		defer f.Close()
		if intact(f, d) {
			return 0, apply(ctx, f, dir)
		}
		os.Remove(final)
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Dir(final), ".tmp-*")
	if err != nil {
		return 0, err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name()) // gone already if renamed
	}()
	errStalled := fmt.Errorf("%s: %w: nothing received for %v", rawRef, ErrDownload, StallTimeout)
	stall := time.AfterFunc(StallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	rc, err := l.Compressed()
	if err != nil {
		return 0, p.fail(rawRef, err)
	}
	defer rc.Close()
	// The layer is applied as it arrives, beside the download.
	pr, pw := io.Pipe()
	applied := make(chan error, 1)
	go func() {
		err := apply(ctx, pr, dir)
		pr.CloseWithError(err) // nil: the writer sees io.ErrClosedPipe
		applied <- err
	}()
	toApply := &pipeWriter{w: pw}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var n int64
	fail := func(err error) (int64, error) {
		pw.CloseWithError(err)
		var ue *archive.UnsafeError
		if aerr := <-applied; errors.As(aerr, &ue) {
			return 0, aerr // what the layer holds, whatever the download did next
		}
		return 0, err
	}
	for {
		stall.Reset(StallTimeout)
		m, rerr := rc.Read(buf)
		if m > 0 {
			n += int64(m)
			if *limit >= 0 && n > *limit {
				return fail(fmt.Errorf("%s: %w: larger than the %d bytes allowed (the pool's free space)", rawRef, ErrDownload, *limit))
			}
			h.Write(buf[:m])
			if _, err := f.Write(buf[:m]); err != nil {
				return fail(err)
			}
			if _, err := toApply.Write(buf[:m]); err != nil {
				return fail(err)
			}
			progress(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if context.Cause(ctx) == errStalled {
				return fail(errStalled)
			}
			var de *DigestError
			if errors.As(rerr, &de) {
				return fail(de)
			}
			if strings.Contains(rerr.Error(), "error verifying") {
				return fail(&DigestError{Ref: rawRef, Expected: d.String(), Actual: "sha256:" + hex.EncodeToString(h.Sum(nil)) + " (so far)"})
			}
			return fail(p.fail(rawRef, rerr))
		}
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.String() {
		return fail(&DigestError{Ref: rawRef, Expected: d.String(), Actual: got})
	}
	pw.Close()
	if err := <-applied; err != nil {
		return 0, err
	}
	if *limit >= 0 {
		*limit -= n
	}
	if err := os.Rename(f.Name(), final); err != nil {
		return 0, err
	}
	return n, nil
}

// intact reports whether cached blob f has digest d, and leaves it at its
// start.
func intact(f *os.File, d v1.Hash) bool {
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false
	}
	return hex.EncodeToString(h.Sum(nil)) == d.Hex
}

// pipeWriter feeds the layer's applier; once it has read all it needs
// (a tar stream ends before the padding after it) the rest is dropped.
type pipeWriter struct {
	w    *io.PipeWriter
	done bool
}

func (p *pipeWriter) Write(b []byte) (int, error) {
	if p.done {
		return len(b), nil
	}
	n, err := p.w.Write(b)
	if errors.Is(err, io.ErrClosedPipe) {
		p.done = true
		return len(b), nil
	}
	return n, err
}

// apply extracts one layer (plain, gzip or zstd) read from r over dir.
func apply(ctx context.Context, r io.Reader, dir string) error {
	z, _, err := archive.Decompressor(r)
	if err != nil {
		return err
	}
	defer z.Close()
	if err := archive.Extract(ctx, z, dir, archive.Options{Layer: true}); err != nil {
		return err
	}
	return z.Close()
}
