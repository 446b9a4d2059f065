package registry

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/google/go-containerregistry/pkg/authn"
)

// Config is where berth finds what podman and Docker keep about
// registries on this host. berthd is a system service acting for root,
// so it reads root's files.
type Config struct {
	// Root prefixes every path (tests).
	Root string
	// AuthFiles are containers-auth.json(5) and Docker config.json files,
	// the first that names a registry wins.
	AuthFiles []string
	// CertDirs hold HOST[:PORT]/*.crt (a registry's CAs) and
	// *.cert/*.key pairs (client certificates), as containers-certs.d(5)
	// and Docker's certs.d lay them out.
	CertDirs []string
	// RegistriesConf is containers-registries.conf(5) (with .d drop-ins),
	// for registries marked insecure.
	RegistriesConf string
	// Policy is containers-policy.json(5); PolicyFile when empty.
	Policy string
}

// DefaultConfig is what podman run as root reads.
var DefaultConfig = Config{
	AuthFiles: []string{
		"/run/containers/0/auth.json",
		"/root/.config/containers/auth.json",
		"/etc/containers/auth.json",
		"/root/.docker/config.json",
	},
	CertDirs:       []string{"/etc/containers/certs.d", "/etc/docker/certs.d"},
	RegistriesConf: "/etc/containers/registries.conf",
}

func (c *Config) path(p string) string { return filepath.Join(c.Root, p) }

// maxConfigFile bounds what is read of each of these files.
const maxConfigFile = 1 << 20

func (c *Config) read(p string) ([]byte, error) {
	f, err := os.Open(c.path(p))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(&limitReader{f, maxConfigFile})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return data, nil
}

type limitReader struct {
	f    *os.File
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, fmt.Errorf("larger than %d bytes", maxConfigFile)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.f.Read(p)
	l.left -= int64(n)
	return n, err
}

// Insecure reports whether registries.conf marks the registry host[:port]
// insecure: plain http allowed, certificates not checked.
func (c *Config) Insecure(host string) (bool, error) {
	files := []string{c.RegistriesConf}
	if ds, err := filepath.Glob(c.path(c.RegistriesConf + ".d/*.conf")); err == nil {
		for _, d := range ds {
			files = append(files, strings.TrimPrefix(d, c.Root))
		}
	}
	insecure := false
	for _, f := range files {
		data, err := c.read(f)
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			return false, err
		}
		var rc struct {
			Registry []struct {
				Location string
				Prefix   string
				Insecure *bool
			}
			Registries struct{ Insecure struct{ Registries []string } } // version 1
		}
		if _, err := toml.Decode(string(data), &rc); err != nil {
			return false, fmt.Errorf("%s: %w", f, err)
		}
		for _, r := range rc.Registry {
			loc := r.Location
			if r.Prefix != "" {
				loc = r.Prefix
			}
			if r.Insecure != nil && strings.SplitN(loc, "/", 2)[0] == host {
				insecure = *r.Insecure // later files override earlier ones
			}
		}
		if slices.Contains(rc.Registries.Insecure.Registries, host) {
			insecure = true
		}
	}
	return insecure, nil
}

// Transport is an HTTP transport for registry host: the system's CAs plus
// the registry's own from the cert directories, and its client
// certificate if one is there.
func (c *Config) Transport(host string, insecure bool) (*http.Transport, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	for _, dir := range c.CertDirs {
		d := filepath.Join(dir, host)
		ents, err := os.ReadDir(c.path(d))
		if err != nil {
			continue
		}
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			switch filepath.Ext(e.Name()) {
			case ".crt":
				pem, err := c.read(p)
				if err != nil {
					return nil, err
				}
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("%s: no certificate in it", p)
				}
			case ".cert":
				key := strings.TrimSuffix(p, ".cert") + ".key"
				pair, err := tls.LoadX509KeyPair(c.path(p), c.path(key))
				if err != nil {
					return nil, fmt.Errorf("client certificate %s: %w", p, err)
				}
				tc.Certificates = append(tc.Certificates, pair)
			}
		}
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   StallTimeout,
		ResponseHeaderTimeout: StallTimeout,
		MaxIdleConnsPerHost:   4,
	}, nil
}

// Keychain finds credentials in the auth files: for REGISTRY/REPO the
// longest entry that is a prefix of it, else the registry's, as
// containers-auth.json(5) says.
func (c *Config) Keychain(repo string) authn.Keychain { return keychain{c, repo} }

type keychain struct {
	c    *Config
	repo string // registry/repository
}

func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	reg := r.RegistryStr()
	keys := []string{}
	for p := k.repo; strings.Contains(p, "/"); p = p[:strings.LastIndexByte(p, '/')] {
		keys = append(keys, p)
	}
	keys = append(keys, reg, "https://"+reg, "http://"+reg)
	if reg == "index.docker.io" {
		keys = append(keys, "docker.io", "https://index.docker.io/v1/")
	}
	for _, f := range k.c.AuthFiles {
		data, err := k.c.read(f)
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			return nil, err
		}
		var af struct {
			Auths map[string]struct {
				Auth          string `json:"auth"`
				IdentityToken string `json:"identitytoken"`
			} `json:"auths"`
		}
		if err := json.Unmarshal(data, &af); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, key := range keys {
			a, ok := af.Auths[key]
			if !ok {
				continue
			}
			if a.IdentityToken != "" {
				return authn.FromConfig(authn.AuthConfig{IdentityToken: a.IdentityToken}), nil
			}
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			user, pass, ok := strings.Cut(string(raw), ":")
			if err != nil || !ok {
				return nil, fmt.Errorf("%s: the entry for %s is not base64 of user:password", f, key)
			}
			return authn.FromConfig(authn.AuthConfig{Username: user, Password: pass}), nil
		}
	}
	return authn.Anonymous, nil
}
