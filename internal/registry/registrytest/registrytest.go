// Package registrytest runs go-containerregistry's own registry, a
// complete implementation of the distribution protocol, on 127.0.0.1 for
// in-process tests, and makes images for it.
package registrytest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-project/berth/internal/registry"
)

// Layer is a gzipped tar layer of entries: "name content" files and
// "name/" directories.
func Layer(t testing.TB, entries ...string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		n, content, _ := strings.Cut(e, " ")
		h := &tar.Header{Name: n, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(content))}
		if strings.HasSuffix(n, "/") {
			h = &tar.Header{Name: n, Mode: 0o755, Typeflag: tar.TypeDir}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	tw.Close()
	gz.Close()
	return static.NewLayer(buf.Bytes(), types.DockerLayer)
}

// Handler is a registry of its own, in memory, that logs nothing.
func Handler() http.Handler {
	return ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
}

// Serve starts a registry, wrapped by mw if given (for faults no honest
// registry produces), and returns its host:port.
func Serve(t testing.TB, mw func(http.Handler) http.Handler) string {
	t.Helper()
	h := Handler()
	if mw != nil {
		h = mw(h)
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// Push uploads an image of layers as host/repo:latest and returns its
// manifest digest.
func Push(t testing.TB, host, repo string, layers ...v1.Layer) v1.Hash {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(host+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d
}

// Client pulls from and pushes to host over plain http, which a registries.conf entry
// allows, as an admin marks a registry insecure for podman.
func Client(t testing.TB, host string) *registry.Client {
	t.Helper()
	root := t.TempDir()
	conf := filepath.Join(root, "etc/containers/registries.conf")
	os.MkdirAll(filepath.Dir(conf), 0o755)
	if err := os.WriteFile(conf, []byte("[[registry]]\nlocation = \""+host+"\"\ninsecure = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &registry.Client{Config: registry.Config{Root: root, RegistriesConf: "/etc/containers/registries.conf"}, CacheDir: filepath.Join(root, "cache")}
}
