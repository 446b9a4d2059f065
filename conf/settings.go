package conf

import (
	"errors"
	"io/fs"
)

// LoadSettings reads berth.toml from the search path (the first found,
// with its drop-ins) and returns [Pool] Directory and [Cache] Directory,
// or the given defaults for what it does not set.
func (l *Loader) LoadSettings(poolDir, cacheDir string) (string, string, error) {
	sl := Loader{Root: l.Root, Dirs: l.Dirs, Schema: Settings}
	m, err := sl.load1("berth")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrMasked) {
		return poolDir, cacheDir, nil
	} else if err != nil {
		return poolDir, cacheDir, err
	}
	if v, ok := m.Get("Pool", "Directory"); ok {
		poolDir = v.Str
	}
	if v, ok := m.Get("Cache", "Directory"); ok {
		cacheDir = v.Str
	}
	return poolDir, cacheDir, nil
}
