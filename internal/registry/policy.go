package registry

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// PolicyFile is containers-policy.json(5), which podman, skopeo and berth
// obey alike: for the docker transport, the requirements of the most
// specific scope that matches an image (REGISTRY/REPO, a namespace of it,
// REGISTRY, *.DOMAIN), else the default ones.
const PolicyFile = "/etc/containers/policy.json"

type requirement struct {
	Type     string   `json:"type"`
	KeyPath  string   `json:"keyPath"`
	KeyPaths []string `json:"keyPaths"`
	KeyData  string   `json:"keyData"`
}

type policy struct {
	Default    []requirement                       `json:"default"`
	Transports map[string]map[string][]requirement `json:"transports"`
}

// requirements returns what the policy demands of repo; with no policy
// file, what Debian's containers-common ships: accept anything.
func (c *Config) requirements(repo name.Repository) ([]requirement, error) {
	data, err := c.read(c.policyFile())
	if os.IsNotExist(err) {
		return []requirement{{Type: "insecureAcceptAnything"}}, nil
	} else if err != nil {
		return nil, err
	}
	var p policy
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", c.policyFile(), err)
	}
	scopes := p.Transports["docker"]
	// REGISTRY/NS/REPO, then each namespace above it, then REGISTRY.
	for s := repo.Name(); ; {
		if reqs, ok := scopes[s]; ok {
			return reqs, nil
		}
		i := strings.LastIndexByte(s, '/')
		if i < 0 {
			break
		}
		s = s[:i]
	}
	labels := strings.Split(repo.RegistryStr(), ".")
	for i := 1; i < len(labels); i++ {
		if reqs, ok := scopes["*."+strings.Join(labels[i:], ".")]; ok {
			return reqs, nil
		}
	}
	if len(p.Default) == 0 {
		return nil, fmt.Errorf("%s: no default requirement", c.policyFile())
	}
	return p.Default, nil
}

func (c *Config) policyFile() string {
	if c.Policy != "" {
		return c.Policy
	}
	return PolicyFile
}

// checkPolicy applies the policy to the image d of ref: every requirement
// must hold, as containers-policy.json(5) says.
func (c *Client) checkPolicy(ctx context.Context, rawRef string, ref name.Reference, digests []v1.Hash) error {
	reqs, err := c.Config.requirements(ref.Context())
	if err != nil {
		return err
	}
	for _, r := range reqs {
		switch r.Type {
		case "insecureAcceptAnything":
		case "reject":
			return &SignatureError{rawRef, fmt.Sprintf("%s rejects images of %s", c.Config.policyFile(), ref.Context().Name())}
		case "sigstoreSigned":
			keys, err := c.Config.policyKeys(r)
			if err != nil {
				return err
			}
			for _, d := range digests {
				if err = c.verifySignatures(ctx, rawRef, ref, d, keys); err == nil {
					break
				}
			}
			if err != nil {
				return err
			}
		default:
			return &SignatureError{rawRef, fmt.Sprintf("%s requires %q, which berth does not check (it checks sigstoreSigned)", c.Config.policyFile(), r.Type)}
		}
	}
	return nil
}

func (c *Config) policyKeys(r requirement) ([]crypto.PublicKey, error) {
	if r.KeyData != "" {
		return ParsePublicKeys([]byte(r.KeyData))
	}
	paths := r.KeyPaths
	if r.KeyPath != "" {
		paths = append(paths, r.KeyPath)
	}
	var keys []crypto.PublicKey
	for _, p := range paths {
		data, err := c.read(p)
		if err != nil {
			return nil, fmt.Errorf("%s: key %s: %w", c.policyFile(), p, err)
		}
		k, err := ParsePublicKeys(data)
		if err != nil {
			return nil, fmt.Errorf("%s: key %s: %w", c.policyFile(), p, err)
		}
		keys = append(keys, k...)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: a sigstoreSigned requirement without keys", c.policyFile())
	}
	return keys, nil
}
