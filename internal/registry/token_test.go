package registry_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/berth-project/berth/internal/registry"
	"github.com/berth-project/berth/internal/registry/registrytest"
)

// tokenService puts a registry behind bearer tokens, as Docker Hub, GHCR
// and Quay do: the registry answers 401 with a challenge naming a token
// realm and scope, the client asks the realm for a token (anonymously, or
// with the credentials it has) and retries with it. It stands in for those
// services, which this machine cannot reach; the registry behind it is
// real. Anyone may pull public/*; private/* needs alice's password.
type tokenService struct {
	mu       sync.Mutex
	requests []string // "user scope" per token request
	bearers  int      // registry requests that carried a token
	leaked   int      // registry requests that carried a password
}

func (ts *tokenService) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			ts.token(w, r)
			return
		}
		repo, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/manifests/")
		repo, _, _ = strings.Cut(repo, "/blobs/")
		scope := "repository:" + repo + ":pull"
		auth := r.Header.Get("Authorization")
		if strings.HasPrefix(auth, "Basic ") {
			ts.mu.Lock()
			ts.leaked++
			ts.mu.Unlock()
		}
		granted := strings.TrimPrefix(auth, "Bearer ")
		if granted == auth || (r.URL.Path != "/v2/" && !strings.Contains(granted, "|"+scope+"|")) {
			challenge := `Bearer realm="http://` + r.Host + `/token",service="test"`
			if r.URL.Path != "/v2/" {
				challenge += `,scope="` + scope + `"`
			}
			w.Header().Set("WWW-Authenticate", challenge)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		ts.mu.Lock()
		ts.bearers++
		ts.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// token grants what the caller may have: a token is the list of scopes.
func (ts *tokenService) token(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if ok && (user != "alice" || pass != "secret") {
		http.Error(w, "bad credentials", http.StatusUnauthorized)
		return
	}
	scopes := r.URL.Query()["scope"]
	ts.mu.Lock()
	ts.requests = append(ts.requests, user+" "+strings.Join(scopes, " "))
	ts.mu.Unlock()
	granted := "|"
	for _, s := range scopes {
		if strings.HasPrefix(s, "repository:public/") || user == "alice" {
			granted += s + "|"
		}
	}
	json.NewEncoder(w).Encode(map[string]string{"token": granted})
}

// Pulls through a token service: anonymously from a public repository,
// with the credentials of auth.json from a private one (sent to the token
// realm, never to the registry), and refused without them, leaving
// nothing.
func TestPullBearerToken(t *testing.T) {
	reg := registrytest.Handler()    // served twice: plain and behind tokens
	plain := httptest.NewServer(reg) // where the test pushes
	t.Cleanup(plain.Close)
	ts := &tokenService{}
	guarded := httptest.NewServer(ts.wrap(reg)) // where berth pulls
	t.Cleanup(guarded.Close)
	pushHost := strings.TrimPrefix(plain.URL, "http://")
	host := strings.TrimPrefix(guarded.URL, "http://")
	l := layer(t, "etc/", "etc/os-release ID=test")
	push(t, pushHost, "public/app", l)
	push(t, pushHost, "private/app", l)

	p := puller(t, host)
	if _, err := p.Pull(context.Background(), registry.Scheme+host+"/public/app:latest", t.TempDir(), -1, nop); err != nil {
		t.Fatalf("anonymous pull of a public image: %v", err)
	}
	if len(ts.requests) == 0 || ts.requests[0] != " repository:public/app:pull" || ts.bearers == 0 {
		t.Fatalf("token requests %q, %d with a token", ts.requests, ts.bearers)
	}

	dir := filepath.Join(t.TempDir(), "m")
	_, err := p.Pull(context.Background(), registry.Scheme+host+"/private/app:latest", dir, -1, nop)
	if !errors.Is(err, registry.ErrAuth) {
		t.Fatalf("anonymous pull of a private image: %v", err)
	}
	if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("a refused pull left %s", dir)
	}

	auth := base64.StdEncoding.EncodeToString([]byte("alice:secret"))
	if err := os.WriteFile(filepath.Join(p.Config.Root, "auth.json"), []byte(`{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Config.AuthFiles = []string{"/auth.json"}
	if _, err := p.Pull(context.Background(), registry.Scheme+host+"/private/app:latest", t.TempDir(), -1, nop); err != nil {
		t.Fatalf("pull of a private image with alice's credentials: %v", err)
	}
	if last := ts.requests[len(ts.requests)-1]; last != "alice repository:private/app:pull" || ts.leaked != 0 {
		t.Errorf("token request %q; the password went to the registry %d times", last, ts.leaked)
	}
}
