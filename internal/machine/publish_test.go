package machine

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/internal/pool"
	"github.com/berth-project/berth/internal/registry/registrytest"
	"github.com/berth-project/berth/testbed"
)

// A template is published as one layer; a clone of it as that very layer
// and its changes, so the clone's upload is a small fraction of the
// template's; pulled back, the clone is what it was. Both compressions.
func TestPublishTemplateAndClone(t *testing.T) {
	p, err := pool.Open(testbed.LoopBtrfs(t, 512<<20))
	if err != nil {
		t.Fatal(err)
	}
	noise := make([]byte, 4<<20)
	rand.Read(noise)
	templateWith(t, p, "base", map[string][]byte{"etc/machine-id": nil, "etc/hostname": []byte("base\n"), "usr/lib/big": noise, "etc/old": []byte("old\n")})
	m := &Manager{Pool: p}
	host := registrytest.Serve(t, nil)
	m.Registry = registrytest.Client(t, host)
	ctx := context.Background()
	nop := func(string, int64, int64) {}
	if _, err := m.Clone(ctx, "base", "c1"); err != nil {
		t.Fatal(err)
	}
	c1 := p.Path("c1")
	os.WriteFile(filepath.Join(c1, "etc/hostname"), []byte("c1\n"), 0o644)
	os.Remove(filepath.Join(c1, "etc/old"))
	os.MkdirAll(filepath.Join(c1, "srv/site"), 0o755)
	os.WriteFile(filepath.Join(c1, "srv/site/index.html"), []byte("hello\n"), 0o644)

	// Progress ends with the call: berthd's final reply follows it, and
	// a report after that broke the connection (seen in bench/).
	var returned atomic.Bool
	late := func(string, int64, int64) {
		if returned.Load() {
			t.Error("progress reported after Publish returned")
		}
	}
	first, err := m.Publish(ctx, "base", host+"/test/base:1", archive.Zstd, nil, late)
	returned.Store(true)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	second, err := m.Publish(ctx, "c1", host+"/test/c1:1", archive.Zstd, nil, nop)
	if err != nil {
		t.Fatal(err)
	}
	if second.Sent*10 >= first.Sent {
		t.Errorf("the clone sent %d bytes, the template %d: want under a tenth", second.Sent, first.Sent)
	}
	for _, tc := range []struct {
		ref, name string
	}{{second.Ref, "c1-pulled"}} {
		img, err := m.Pull(ctx, tc.ref, tc.name, VerifyChecksum, nop)
		if err != nil {
			t.Fatal(err)
		}
		if img.Template != second.Ref {
			t.Errorf("origin %q", img.Template)
		}
	}
	for rel, want := range map[string]string{"etc/hostname": "c1\n", "srv/site/index.html": "hello\n", "usr/lib/big": string(noise)} {
		if got, _ := os.ReadFile(filepath.Join(p.Path("c1-pulled"), rel)); string(got) != want {
			t.Errorf("%s: %.20q, want %.20q", rel, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(p.Path("c1-pulled"), "etc/old")); !os.IsNotExist(err) {
		t.Errorf("etc/old, deleted in the clone, is back: %v", err)
	}
	// gzip, for registries and clients without zstd.
	gz, err := m.Publish(ctx, "c1", host+"/test/c1:gzip", archive.Gzip, nil, nop)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Pull(ctx, gz.Ref, "c1-gzip", VerifyChecksum, nop); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(p.Path("c1-gzip"), "etc/hostname")); string(got) != "c1\n" {
		t.Errorf("gzip: etc/hostname %q", got)
	}
}

// A signed publish passes a policy that wants the publisher's signature;
// the same image unsigned does not.
func TestPublishSigned(t *testing.T) {
	_, m, host := withTinyTemplate(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	root := m.Registry.Config.Root
	os.WriteFile(filepath.Join(root, "pub.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(root, "etc/containers/policy.json"), []byte(`{"default":[{"type":"sigstoreSigned","keyPath":"/pub.pem"}]}`), 0o644)
	ctx := context.Background()
	nop := func(string, int64, int64) {}
	signed, err := m.Publish(ctx, "base", host+"/t/signed:1", archive.Zstd, key, nop)
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := m.Publish(ctx, "base", host+"/t/unsigned:1", archive.Zstd, nil, nop)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Pull(ctx, signed.Ref, "s", VerifySignature, nop); err != nil {
		t.Errorf("signed: %v", err)
	}
	var se *SignatureError
	if _, err := m.Pull(ctx, unsigned.Ref, "u", VerifySignature, nop); !errors.As(err, &se) || se.URL != unsigned.Ref {
		t.Errorf("unsigned: %v", err)
	}
}

// While the cache is being cleaned, a pull or a publish that starts is
// refused before it writes a blob or a tree (cleaning would delete them
// under it); once cleaning ends, both are granted.
func TestCacheCleaningHoldsOffPullAndPublish(t *testing.T) {
	p, m, host := withTinyTemplate(t)
	ctx := context.Background()
	nop := func(string, int64, int64) {}
	pub, err := m.Publish(ctx, "base", host+"/t/base:1", archive.Zstd, nil, nop)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(m.Registry.CacheDir); err != nil {
		t.Fatal(err)
	}
	unlock, err := p.LockAlone(pool.CleanCache)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Pull(ctx, pub.Ref, "web", VerifyChecksum, nop); !errors.Is(err, pool.ErrBusy) {
		t.Errorf("pull while cleaning: %v, want ErrBusy", err)
	}
	if _, err := m.Publish(ctx, "base", host+"/t/again:1", archive.Zstd, nil, nop); !errors.Is(err, pool.ErrBusy) {
		t.Errorf("publish while cleaning: %v, want ErrBusy", err)
	}
	if _, err := os.Stat(m.Registry.CacheDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused calls wrote to the cache: %v", err)
	}
	if p.Exists("web") {
		t.Error("the refused pull left a machine")
	}
	unlock()
	if _, err := m.Pull(ctx, pub.Ref, "web", VerifyChecksum, nop); err != nil {
		t.Errorf("pull after cleaning: %v", err)
	}
	if _, err := m.Publish(ctx, "base", host+"/t/again:1", archive.Zstd, nil, nop); err != nil {
		t.Errorf("publish after cleaning: %v", err)
	}
}

// withTinyTemplate is a pool with a template "base" of two files and a
// Manager of it whose registry client reaches the registry at host.
func withTinyTemplate(t *testing.T) (p *pool.Pool, m *Manager, host string) {
	t.Helper()
	p, err := pool.Open(testbed.LoopBtrfs(t, 256<<20))
	if err != nil {
		t.Fatal(err)
	}
	templateWith(t, p, "base", map[string][]byte{"etc/machine-id": nil, "etc/os-release": []byte("ID=t\n")})
	m = &Manager{Pool: p}
	host = registrytest.Serve(t, nil)
	m.Registry = registrytest.Client(t, host)
	return p, m, host
}
