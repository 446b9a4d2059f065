// Package template builds, lists and removes templates: vanilla read-only
// Debian trees in the pool, bootstrapped once per suite and kept as cached
// base trees so that the next template only adds its packages.
package template

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/berth-project/berth/conf"
)

// Recipe is what a template is built from.
type Recipe struct {
	Suite        string   `json:"suite"`
	Variant      string   `json:"variant,omitempty"`
	Include      []string `json:"include,omitempty"`
	Architecture string   `json:"architecture,omitempty"`
	Components   []string `json:"components,omitempty"`
	Mirror       string   `json:"mirror,omitempty"`
	Bootstrapper string   `json:"bootstrapper,omitempty"`
}

// RecipeError names the field of a recipe that cannot be used.
type RecipeError struct {
	Field, Reason string
}

func (e *RecipeError) Error() string { return fmt.Sprintf("recipe %s: %s", e.Field, e.Reason) }

// DefaultMirror is Debian's redirector.
const DefaultMirror = "http://deb.debian.org/debian"

var (
	reSuite     = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]*$`)
	rePackage   = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?([=/][A-Za-z0-9.+~:-]+)?$`)
	reArch      = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	reComponent = regexp.MustCompile(`^[a-z][a-z0-9/-]*$`)
	variants    = map[string][]string{
		"mmdebstrap":  {"extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important", "debootstrap", "standard"},
		"debootstrap": {"minbase", "buildd", "important"},
	}
)

// Normalize fills in defaults and checks every field, so that a bad
// recipe fails before any work starts.
func (r *Recipe) Normalize() error {
	if r.Bootstrapper == "" {
		r.Bootstrapper = "mmdebstrap"
	}
	allowed, ok := variants[r.Bootstrapper]
	if !ok {
		return &RecipeError{"bootstrapper", fmt.Sprintf("%q is neither mmdebstrap nor debootstrap", r.Bootstrapper)}
	}
	if r.Variant == "" {
		r.Variant = "minbase"
	}
	if !slices.Contains(allowed, r.Variant) {
		return &RecipeError{"variant", fmt.Sprintf("%q is not a %s variant (%s)", r.Variant, r.Bootstrapper, strings.Join(allowed, ", "))}
	}
	if !reSuite.MatchString(r.Suite) {
		return &RecipeError{"suite", fmt.Sprintf("%q is not a Debian suite name", r.Suite)}
	}
	for _, p := range r.Include {
		if !rePackage.MatchString(p) {
			return &RecipeError{"include", fmt.Sprintf("%q is not a package name", p)}
		}
	}
	r.Include = slices.Compact(slices.Sorted(slices.Values(r.Include)))
	if r.Architecture == "" {
		out, err := exec.Command("dpkg", "--print-architecture").Output()
		if err != nil {
			return &RecipeError{"architecture", "not given, and dpkg --print-architecture failed"}
		}
		r.Architecture = strings.TrimSpace(string(out))
	}
	if !reArch.MatchString(r.Architecture) {
		return &RecipeError{"architecture", fmt.Sprintf("%q is not a Debian architecture", r.Architecture)}
	}
	if len(r.Components) == 0 {
		r.Components = []string{"main"}
	}
	for _, c := range r.Components {
		if !reComponent.MatchString(c) {
			return &RecipeError{"components", fmt.Sprintf("%q is not an archive component", c)}
		}
	}
	if r.Mirror == "" {
		r.Mirror = DefaultMirror
	}
	r.Mirror = strings.TrimRight(r.Mirror, "/")
	if !strings.HasPrefix(r.Mirror, "http://") && !strings.HasPrefix(r.Mirror, "https://") && !strings.HasPrefix(r.Mirror, "file:///") {
		return &RecipeError{"mirror", fmt.Sprintf("%q is not an http(s):// or file:/// URL", r.Mirror)}
	}
	return nil
}

// baseKey names the cached base tree a recipe starts from: everything but
// the extra packages.
func (r *Recipe) baseKey() string {
	h := sha256.Sum256([]byte(strings.Join([]string{
		r.Bootstrapper, r.Suite, r.Variant, r.Architecture, strings.Join(r.Components, ","), r.Mirror, "v1"}, "\n")))
	return r.Suite + "-" + r.Architecture + "-" + r.Variant + "-" + hex.EncodeToString(h[:5])
}

// checkMirror asks the mirror for the suite's Release file, so that an
// unknown suite or a bad mirror is reported as such, in a second, instead
// of as a bootstrapper failure a minute later.
func (r *Recipe) checkMirror(ctx context.Context) error {
	if strings.HasPrefix(r.Mirror, "file://") {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	url := r.Mirror + "/dists/" + r.Suite + "/Release"
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return &RecipeError{"mirror", err.Error()}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return &RecipeError{"mirror", fmt.Sprintf("cannot reach %s: %v", r.Mirror, err)}
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return &RecipeError{"suite", fmt.Sprintf("%s has no suite %q (%s: 404)", r.Mirror, r.Suite, url)}
	case resp.StatusCode != http.StatusOK:
		return &RecipeError{"mirror", fmt.Sprintf("%s answered %s", url, resp.Status)}
	}
	return nil
}

// RecipeFromConfig reads templates/NAME.toml (with its drop-ins) from the
// berth search path, for Create calls that give no recipe.
func RecipeFromConfig(l *conf.Loader, name string) (Recipe, error) {
	m, err := l.Load(name)
	if errors.Is(err, fs.ErrNotExist) {
		return Recipe{}, &RecipeError{"recipe", fmt.Sprintf("none given, and no templates/%s.toml in %s",
			name, strings.Join(conf.SearchDirs, ", "))}
	} else if err != nil {
		return Recipe{}, &RecipeError{"recipe", err.Error()}
	}
	str := func(key string) string { v, _ := m.Get(conf.SecTemplate, key); return v.Str }
	list := func(key string) []string { v, _ := m.Get(conf.SecTemplate, key); return v.List }
	r := Recipe{Suite: str("Suite"), Variant: str("Variant"), Include: list("Include"),
		Architecture: str("Architecture"), Components: list("Components"), Mirror: str("Mirror"),
		Bootstrapper: str("Bootstrapper")}
	if r.Suite == "" {
		return r, &RecipeError{"suite", m.Source + ": [Template] Suite is not set"}
	}
	return r, nil
}
