package registry

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Signatures are stored as sigstore (cosign) does, which podman and
// skopeo read and write too ("sigstore attachments"): an image tagged
// sha256-HEX.sig beside the signed one, whose layers are "simple signing"
// payloads naming the signed manifest digest and repository, each with
// its signature in an annotation.
const (
	simpleSigningType   = "application/vnd.dev.cosign.simplesigning.v1+json"
	signatureAnnotation = "dev.cosignproject.cosign/signature"
	signatureType       = "cosign container image signature"
	maxSignatures       = 64
	maxPayload          = 64 << 10
)

// SignatureError is an image whose signatures the policy does not accept.
type SignatureError struct{ Ref, Reason string }

func (e *SignatureError) Error() string { return fmt.Sprintf("%s: %s", e.Ref, e.Reason) }

type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// signatureTag is where the signatures of digest d are kept.
func signatureTag(repo name.Repository, d v1.Hash) name.Tag {
	return repo.Tag(d.Algorithm + "-" + d.Hex + ".sig")
}

// ParsePrivateKey reads a PEM private key: PKCS#8 ("PRIVATE KEY"), or
// SEC 1 ("EC PRIVATE KEY") as openssl writes them.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block in the key")
	}
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY":
		return nil, errors.New("an encrypted cosign key; give berth the key unencrypted (openssl pkcs8 -topk8 -nocrypt), as a file only root can read")
	default:
		return nil, fmt.Errorf("a PEM %q block is not a private key", b.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T keys cannot sign", k)
	}
	return s, nil
}

// ParsePublicKeys reads the PEM public keys ("PUBLIC KEY") in data.
func ParsePublicKeys(data []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "PUBLIC KEY" {
			continue
		}
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key in it")
	}
	return keys, nil
}

func sign(key crypto.Signer, payload []byte) ([]byte, error) {
	sum := sha256.Sum256(payload)
	switch key.Public().(type) {
	case ed25519.PublicKey:
		return key.Sign(rand.Reader, payload, crypto.Hash(0))
	default:
		return key.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
}

func verifySig(pub crypto.PublicKey, payload, sig []byte) bool {
	sum := sha256.Sum256(payload)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, sum[:], sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig) == nil || rsa.VerifyPSS(k, crypto.SHA256, sum[:], sig, nil) == nil
	case ed25519.PublicKey:
		return ed25519.Verify(k, payload, sig)
	}
	return false
}

// Sign adds a signature by key for the image pushed as p to its
// repository, beside the signatures already there.
func (c *Client) Sign(ctx context.Context, p *Pushed, key crypto.Signer) error {
	ref, err := ParseRef(p.Ref)
	if err != nil {
		return err
	}
	d, err := v1.NewHash(p.Digest)
	if err != nil {
		return err
	}
	// The identity is the name pushed, tag included, as podman signs: a
	// policy's default matchRepoDigestOrExact then accepts a pull by that
	// tag or by digest.
	identity := p.Name
	if identity == "" {
		identity = ref.Context().Name()
	}
	var ss simpleSigning
	ss.Critical.Identity.DockerReference = identity
	ss.Critical.Image.DockerManifestDigest = d.String()
	ss.Critical.Type = signatureType
	payload, err := json.Marshal(ss)
	if err != nil {
		return err
	}
	sig, err := sign(key, payload)
	if err != nil {
		return fmt.Errorf("sign %s: %w", p.Ref, err)
	}
	tag := signatureTag(ref.Context(), d)
	_, opts, err := c.options(ctx, p.Ref, tag, nil)
	if err != nil {
		return err
	}
	base := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
	if old, err := remote.Image(tag, opts...); err == nil {
		base = old // keep the signatures there are
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(payload, simpleSigningType),
		Annotations: map[string]string{signatureAnnotation: base64.StdEncoding.EncodeToString(sig)},
	})
	if err != nil {
		return err
	}
	if err := remote.Write(tag, img, opts...); err != nil {
		return c.fail(p.Ref, err)
	}
	return nil
}

// verifySignatures accepts the image d of ref if one of its signatures is
// by one of keys, for d, and for ref's repository.
func (c *Client) verifySignatures(ctx context.Context, rawRef string, ref name.Reference, d v1.Hash, keys []crypto.PublicKey) error {
	tag := signatureTag(ref.Context(), d)
	_, opts, err := c.options(ctx, rawRef, tag, nil)
	if err != nil {
		return err
	}
	img, err := remote.Image(tag, opts...)
	if err != nil {
		if ferr := c.fail(rawRef, err); !errors.Is(ferr, ErrNotFound) {
			return ferr
		}
		return &SignatureError{rawRef, "the policy requires a signature and the image has none"}
	}
	m, err := img.Manifest()
	if err != nil {
		return c.fail(rawRef, err)
	}
	if len(m.Layers) > maxSignatures {
		return &SignatureError{rawRef, fmt.Sprintf("more than %d signatures", maxSignatures)}
	}
	reason := "no signature is by a key the policy names"
	for _, l := range m.Layers {
		if l.MediaType != simpleSigningType || l.Size > maxPayload {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(l.Annotations[signatureAnnotation])
		if err != nil {
			continue
		}
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return c.fail(rawRef, err)
		}
		rc, err := layer.Compressed() // a payload is stored as it is
		if err != nil {
			return c.fail(rawRef, err)
		}
		payload, err := io.ReadAll(io.LimitReader(rc, maxPayload))
		rc.Close()
		if err != nil {
			return c.fail(rawRef, err)
		}
		signed := false
		for _, k := range keys {
			if verifySig(k, payload, sig) {
				signed = true
			}
		}
		if !signed {
			continue
		}
		// Only now is the payload the publisher's word.
		var ss simpleSigning
		if err := json.Unmarshal(payload, &ss); err != nil || ss.Critical.Type != signatureType {
			reason = "a signed payload is not a container image signature"
			continue
		}
		if ss.Critical.Image.DockerManifestDigest != d.String() {
			reason = fmt.Sprintf("the signature is for %s, not %s", ss.Critical.Image.DockerManifestDigest, d)
			continue
		}
		if !identityMatches(ss.Critical.Identity.DockerReference, ref) {
			reason = fmt.Sprintf("the signature is for %s, not %s", ss.Critical.Identity.DockerReference, ref.Name())
			continue
		}
		return nil
	}
	return &SignatureError{rawRef, reason}
}

// identityMatches applies containers-policy.json's default signedIdentity,
// matchRepoDigestOrExact: a pull by digest takes a signature naming any
// reference in the same repository, a pull by tag only one naming that
// very tag.
func identityMatches(signed string, ref name.Reference) bool {
	s, err := name.ParseReference(signed)
	if err != nil {
		return false
	}
	if _, byDigest := ref.(name.Digest); byDigest {
		return s.Context().Name() == ref.Context().Name()
	}
	return s.Name() == ref.Name()
}
