package registry

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Credentials are looked up as containers-auth.json(5) says: the first
// file that has an entry, and in it the longest repository prefix before
// the registry; Docker Hub under its historic key too.
func TestKeychain(t *testing.T) {
	root := t.TempDir()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	os.MkdirAll(filepath.Join(root, "run"), 0o700)
	os.WriteFile(filepath.Join(root, "run/auth.json"), []byte(`{"auths":{
		"reg.example:5000/team/app": {"auth": "`+b64("app:a")+`"},
		"reg.example:5000/team": {"auth": "`+b64("team:t")+`"},
		"reg.example:5000": {"auth": "`+b64("reg:r")+`"}}}`), 0o600)
	os.WriteFile(filepath.Join(root, "docker.json"), []byte(`{"auths":{
		"https://index.docker.io/v1/": {"auth": "`+b64("hub:h")+`"},
		"other.example": {"identitytoken": "tok"}}}`), 0o600)
	c := &Config{Root: root, AuthFiles: []string{"/run/auth.json", "/missing.json", "/docker.json"}}
	for _, tc := range []struct{ repo, user, pass, token string }{
		{"reg.example:5000/team/app", "app", "a", ""},
		{"reg.example:5000/team/other", "team", "t", ""},
		{"reg.example:5000/solo", "reg", "r", ""},
		{"index.docker.io/library/debian", "hub", "h", ""},
		{"other.example/x", "", "", "tok"},
		{"unknown.example/x", "", "", ""},
	} {
		repo, err := name.NewRepository(tc.repo)
		if err != nil {
			t.Fatal(err)
		}
		a, err := c.Keychain(repo.Name()).Resolve(repo)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Username != tc.user || cfg.Password != tc.pass || cfg.IdentityToken != tc.token {
			t.Errorf("%s: %+v", tc.repo, cfg)
		}
		if tc.user == "" && tc.token == "" && a != authn.Anonymous {
			t.Errorf("%s: not anonymous", tc.repo)
		}
	}
	os.WriteFile(filepath.Join(root, "run/auth.json"), []byte(`{"auths":{"reg.example:5000":{"auth":"bm9jb2xvbg=="}}}`), 0o600)
	repo, _ := name.NewRepository("reg.example:5000/x")
	if _, err := c.Keychain(repo.Name()).Resolve(repo); err == nil {
		t.Error("an auth entry without a colon was taken")
	}
}

// registries.conf marks a registry insecure, in v2 tables (a later file
// overriding an earlier one) and v1 lists.
func TestInsecure(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/registries.conf.d"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/registries.conf"), []byte("[[registry]]\nlocation = \"a.example:5000\"\ninsecure = true\n[[registry]]\nlocation = \"b.example\"\ninsecure = true\n[registries.insecure]\nregistries = [\"c.example\"]\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/registries.conf.d/50-b.conf"), []byte("[[registry]]\nlocation = \"b.example\"\ninsecure = false\n"), 0o644)
	c := &Config{Root: root, RegistriesConf: "/etc/registries.conf"}
	for host, want := range map[string]bool{"a.example:5000": true, "b.example": false, "c.example": true, "d.example": false} {
		if got, err := c.Insecure(host); err != nil || got != want {
			t.Errorf("%s: %v %v, want %v", host, got, err, want)
		}
	}
}
