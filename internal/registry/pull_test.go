package registry_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-project/berth/internal/registry"
	"github.com/berth-project/berth/internal/registry/registrytest"
)

var (
	layer  = registrytest.Layer
	serve  = registrytest.Serve
	push   = registrytest.Push
	puller = registrytest.Client
)

func files(t *testing.T, dir string) []string {
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if fi.IsDir() {
			out = append(out, rel+"/")
		} else {
			data, _ := os.ReadFile(p)
			out = append(out, rel+" "+string(data))
		}
		return nil
	})
	return out
}

func nop(string, int64, int64) {}

// A multi-layer image is flattened with its whiteouts applied; its digest
// is reported; a second image sharing the base downloads only its own
// layer, from the cache for the rest.
func TestPullLayersAndCache(t *testing.T) {
	host := serve(t, nil)
	base := layer(t, "etc/", "etc/os-release ID=test", "etc/old gone", "var/", "var/cache/", "var/cache/x cached")
	top := layer(t, "etc/", "etc/.wh.old", "var/cache/", "var/cache/.wh..wh..opq", "var/cache/y fresh", "bin/", "bin/tool v2")
	d := push(t, host, "test/app", base, top)
	p := puller(t, host)
	dir := t.TempDir()
	img, err := p.Pull(context.Background(), registry.Scheme+host+"/test/app:latest", dir, -1, nop)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"bin/", "bin/tool v2", "etc/", "etc/os-release ID=test", "var/", "var/cache/", "var/cache/y fresh"}
	if got := files(t, dir); !slices.Equal(got, want) {
		t.Errorf("tree %q, want %q", got, want)
	}
	if img.Digest != d.String() || img.Ref != registry.Scheme+host+"/test/app@"+d.String() || img.Layers != 2 || img.Cached != 0 {
		t.Errorf("image %+v, digest %s", img, d)
	}
	other := layer(t, "srv/", "srv/site hello")
	push(t, host, "test/other", base, other)
	img2, err := p.Pull(context.Background(), registry.Scheme+host+"/test/other:latest", t.TempDir(), -1, nop)
	if err != nil {
		t.Fatal(err)
	}
	if bs, _ := base.Size(); img2.Cached != bs {
		t.Errorf("second image: %d bytes from the cache, want the base layer's %d", img2.Cached, bs)
	}
	// By digest, as recorded.
	if _, err := p.Pull(context.Background(), img.Ref, t.TempDir(), -1, nop); err != nil {
		t.Errorf("pull by digest: %v", err)
	}
}

// Refusals, each leaving no blob in the cache: a blob whose bytes are not
// its digest (a registry that alters them: injected, as no honest
// registry does it), a missing image, a download over the limit, a
// stalled registry, an index without this platform, refused credentials.
func TestPullRefusals(t *testing.T) {
	corrupt := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				body := rec.Body.Bytes()
				if len(body) > 100 {
					body[len(body)/2] ^= 0xff
				}
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(body)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	host := serve(t, corrupt)
	push(t, host, "bad/digest", layer(t, "a "+strings.Repeat("x", 4096)))
	p := puller(t, host)
	_, err := p.Pull(context.Background(), registry.Scheme+host+"/bad/digest:latest", t.TempDir(), -1, nop)
	var de *registry.DigestError
	if !errors.As(err, &de) && !errors.Is(err, registry.ErrDownload) {
		t.Errorf("corrupt blob: %v", err)
	}
	checkEmptyCache(t, p)

	host = serve(t, nil)
	p = puller(t, host)
	if _, err := p.Pull(context.Background(), registry.Scheme+host+"/no/such:latest", t.TempDir(), -1, nop); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("missing image: %v", err)
	}
	noise := make([]byte, 50000)
	rand.Read(noise)
	push(t, host, "big/one", layer(t, "a "+hex.EncodeToString(noise)))
	if _, err := p.Pull(context.Background(), registry.Scheme+host+"/big/one:latest", t.TempDir(), 1000, nop); !errors.Is(err, registry.ErrDownload) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("over the limit: %v", err)
	}
	checkEmptyCache(t, p)
	if _, err := registry.ParseRef("http://x/y"); !errors.Is(err, registry.ErrReference) {
		t.Errorf("not docker://: %v", err)
	}
}

func TestPullStall(t *testing.T) {
	old := registry.StallTimeout
	registry.StallTimeout = 300 * time.Millisecond
	defer func() { registry.StallTimeout = old }()
	release := make(chan struct{})
	defer close(release)
	stall := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") && r.Header.Get("X-Test-Push") == "" {
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush()
				<-release
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	host := serve(t, stall)
	push(t, host, "slow/one", layer(t, "a b"))
	p := puller(t, host)
	start := time.Now()
	_, err := p.Pull(context.Background(), registry.Scheme+host+"/slow/one:latest", t.TempDir(), -1, nop)
	if !errors.Is(err, registry.ErrDownload) || !strings.Contains(err.Error(), "nothing received") || time.Since(start) > 10*time.Second {
		t.Errorf("stall: %v after %v", err, time.Since(start))
	}
	checkEmptyCache(t, p)
}

func checkEmptyCache(t *testing.T, p *registry.Client) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(p.CacheDir, "blobs", "sha256"))
	if len(ents) != 0 {
		t.Errorf("the cache holds %d entries after a refusal", len(ents))
	}
}

// An index without an image for this platform names what it has.
func TestPullPlatform(t *testing.T) {
	host := serve(t, nil)
	img, _ := mutate.AppendLayers(empty.Image, layer(t, "a b"))
	img, _ = mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: "s390x"})
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}})
	ref, _ := name.ParseReference(host+"/multi/arch:latest", name.Insecure)
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	p := puller(t, host)
	_, err := p.Pull(context.Background(), registry.Scheme+host+"/multi/arch:latest", t.TempDir(), -1, nop)
	var pe *registry.PlatformError
	if !errors.As(err, &pe) || !slices.Equal(pe.Available, []string{"linux/s390x"}) {
		t.Errorf("err = %v", err)
	}
	p.Platform = &v1.Platform{OS: "linux", Architecture: "s390x"}
	if _, err := p.Pull(context.Background(), registry.Scheme+host+"/multi/arch:latest", t.TempDir(), -1, nop); err != nil {
		t.Errorf("s390x: %v", err)
	}
}

// Cached blobs are not synced when written: one that a crash tore (made
// here by truncating it, as no crash can be had on demand) is found out
// by its digest when next used, and fetched again.
func TestPullTornCacheBlob(t *testing.T) {
	host := serve(t, nil)
	l := layer(t, "etc/", "etc/os-release ID=test")
	push(t, host, "test/app", l)
	p := puller(t, host)
	ref := registry.Scheme + host + "/test/app:latest"
	if _, err := p.Pull(context.Background(), ref, t.TempDir(), -1, nop); err != nil {
		t.Fatal(err)
	}
	d, _ := l.Digest()
	blob := filepath.Join(p.CacheDir, "blobs/sha256", d.Hex)
	if err := os.Truncate(blob, 10); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	img, err := p.Pull(context.Background(), ref, dir, -1, nop)
	if err != nil {
		t.Fatalf("pull over a torn cache blob: %v", err)
	}
	size, _ := l.Size()
	if fi, _ := os.Stat(blob); img.Cached != 0 || fi == nil || fi.Size() != size {
		t.Errorf("cached %d bytes, blob now %v, want fetched again (%d bytes)", img.Cached, fi, size)
	}
	if got := files(t, dir); !slices.Equal(got, []string{"etc/", "etc/os-release ID=test"}) {
		t.Errorf("tree %q", got)
	}
}
