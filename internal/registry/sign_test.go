package registry_test

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
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-project/berth/internal/registry"
)

func newKey(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return k, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// setPolicy writes containers-policy.json below the client's root.
func setPolicy(t *testing.T, c *registry.Client, policy string) {
	t.Helper()
	p := filepath.Join(c.Config.Root, "etc/containers/policy.json")
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
}

// containers-policy.json decides, as for podman: a sigstoreSigned scope
// wants a signature by its key, for this digest and repository; reject
// refuses; other scopes are left alone. Nothing is downloaded before.
func TestPullPolicy(t *testing.T) {
	host := serve(t, nil)
	ctx := context.Background()
	c := puller(t, host)
	key, pub := newKey(t)
	other, _ := newKey(t)
	os.WriteFile(filepath.Join(c.Config.Root, "key.pub"), pub, 0o644)
	setPolicy(t, c, `{"default":[{"type":"insecureAcceptAnything"}],
	  "transports":{"docker":{
	    "`+host+`/signed":[{"type":"sigstoreSigned","keyPath":"/key.pub"}],
	    "`+host+`/banned":[{"type":"reject"}]}}}`)
	d := push(t, host, "signed/app", layer(t, "a b"))
	pushed := &registry.Pushed{Ref: registry.Scheme + host + "/signed/app@" + d.String(), Digest: d.String(), Name: host + "/signed/app:latest"}
	pull := func(ref string) error {
		_, err := c.Pull(ctx, registry.Scheme+host+"/"+ref, t.TempDir(), -1, nop)
		return err
	}
	var se *registry.SignatureError
	if err := pull("signed/app:latest"); !errors.As(err, &se) || !strings.Contains(se.Reason, "has none") {
		t.Errorf("unsigned: %v", err)
	}
	checkEmptyCache(t, c)
	if err := c.Sign(ctx, pushed, other); err != nil {
		t.Fatal(err)
	}
	if err := pull("signed/app:latest"); !errors.As(err, &se) || !strings.Contains(se.Reason, "no signature is by a key") {
		t.Errorf("signed by a stranger: %v", err)
	}
	if err := c.Sign(ctx, pushed, key); err != nil {
		t.Fatal(err)
	}
	if err := pull("signed/app:latest"); err != nil {
		t.Errorf("signed: %v", err)
	}
	if err := pull("signed/app@" + d.String()); err != nil {
		t.Errorf("signed, by digest: %v", err)
	}
	// The same image and its signatures copied to another repository of
	// the scope: the signature names signed/app, not signed/copy.
	copyTo := func(from, to string) {
		src, _ := name.ParseReference(host+"/"+from, name.Insecure)
		dst, _ := name.ParseReference(host+"/"+to, name.Insecure)
		img, err := remote.Image(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(dst, img); err != nil {
			t.Fatal(err)
		}
	}
	// The signature names the tag latest: the same image under another tag
	// of the repository is not what was signed (matchRepoDigestOrExact).
	copyTo("signed/app:latest", "signed/app:other")
	if err := pull("signed/app:other"); !errors.As(err, &se) || !strings.Contains(se.Reason, "not "+host+"/signed/app:other") {
		t.Errorf("another tag: %v", err)
	}
	copyTo("signed/app:latest", "signed/copy:latest")
	sigTag := "sha256-" + d.Hex + ".sig"
	copyTo("signed/app:"+sigTag, "signed/copy:"+sigTag)
	if err := pull("signed/copy:latest"); !errors.As(err, &se) || !strings.Contains(se.Reason, "not "+host+"/signed/copy") {
		t.Errorf("signature of another repository: %v", err)
	}
	push(t, host, "banned/app", layer(t, "a b"))
	if err := pull("banned/app:latest"); !errors.As(err, &se) || !strings.Contains(se.Reason, "rejects") {
		t.Errorf("rejected scope: %v", err)
	}
	push(t, host, "free/app", layer(t, "a b"))
	if err := pull("free/app:latest"); err != nil {
		t.Errorf("default scope: %v", err)
	}
}

func TestParseKeys(t *testing.T) {
	if _, err := registry.ParsePrivateKey([]byte("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")); err == nil || !strings.Contains(err.Error(), "unencrypted") {
		t.Errorf("encrypted key: %v", err)
	}
	k, _ := newKey(t)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	if _, err := registry.ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		t.Errorf("PKCS#8: %v", err)
	}
	sec1, _ := x509.MarshalECPrivateKey(k)
	if _, err := registry.ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})); err != nil {
		t.Errorf("SEC 1: %v", err)
	}
	if _, err := registry.ParsePublicKeys([]byte("nothing")); err == nil {
		t.Error("no key accepted")
	}
}
