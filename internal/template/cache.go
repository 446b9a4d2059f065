package template

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/berth-project/berth/internal/pool"
)

// CacheEntry is one thing kept to make builds faster.
type CacheEntry struct {
	Kind  string // "packages" or "base"
	Name  string
	Path  string
	Size  int64
	Files int
}

// Cache lists the package caches, the base trees and the image caches.
func (m *Manager) Cache() ([]CacheEntry, error) {
	var out []CacheEntry
	debs, _ := os.ReadDir(filepath.Join(m.CacheDir, "debs"))
	for _, d := range debs {
		p := filepath.Join(m.CacheDir, "debs", d.Name())
		size, files := pool.Usage(p)
		out = append(out, CacheEntry{Kind: "packages", Name: d.Name(), Path: p, Size: size, Files: files})
	}
	bases, _ := os.ReadDir(m.baseDir())
	for _, b := range bases {
		if b.Name()[0] == '.' {
			continue // a build in progress
		}
		p := filepath.Join(m.baseDir(), b.Name())
		size, _ := pool.Usage(p)
		out = append(out, CacheEntry{Kind: "base", Name: b.Name(), Path: p, Size: size})
	}
	// What registry pulls and publishes keep (internal/registry,
	// machine.Publish).
	for _, d := range []string{"blobs", "layers"} {
		p := filepath.Join(m.CacheDir, d)
		if _, err := os.Stat(p); err == nil {
			size, files := pool.Usage(p)
			out = append(out, CacheEntry{Kind: "images", Name: d, Path: p, Size: size, Files: files})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind+out[i].Name < out[j].Kind+out[j].Name })
	return out, nil
}

// CleanCache deletes the package caches, the base trees and the image
// caches, returning the bytes freed. It refuses while any operation on the
// pool runs, and every operation that starts meanwhile is refused: a pull
// or a build would find the blobs or packages it writes deleted under it.
func (m *Manager) CleanCache() (int64, error) {
	unlock, err := m.Pool.LockAlone(pool.CleanCache)
	if err != nil {
		return 0, err
	}
	defer unlock()
	entries, err := m.Cache()
	if err != nil {
		return 0, err
	}
	var freed int64
	for _, e := range entries {
		if err := m.Pool.RemoveTree(e.Path); err != nil {
			return freed, fmt.Errorf("clean %s: %w", e.Path, err)
		}
		freed += e.Size
	}
	os.Remove(m.baseDir()) // only if empty: a build may have started since
	return freed, nil
}
