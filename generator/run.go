package generator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/syslog"
)

// Config is one generator run.
type Config struct {
	// Root prefixes every path read and written, like systemctl --root.
	Root string
	// OutDir is the generator's normal output directory, as the target
	// system sees it (systemd passes /run/systemd/generator).
	OutDir string
	// UnitDir is where systemd-nspawn@.service is installed.
	UnitDir string
	// ConfigDirs overrides conf.SearchDirs when non-nil.
	ConfigDirs []string
	// DryRun prints what would be written to Stdout and writes nothing.
	DryRun bool
	Stdout io.Writer
	Log    *syslog.Logger
}

// Failure is a machine that was skipped, and why.
type Failure struct {
	Name string
	Err  error
}

// Report says what a run did.
type Report struct {
	Generated []string
	Failed    []Failure
}

// Run generates every machine, skipping (and logging) those that fail, and
// removes what earlier runs wrote for machines that are gone. It never
// stops early: one bad file must not keep the others from booting.
func Run(cfg Config) Report {
	var rep Report
	loader := conf.Loader{Root: cfg.Root, Dirs: cfg.ConfigDirs}
	var outs []*Output
	for _, res := range loader.LoadAll() {
		out, err := convertResult(cfg, res)
		if err != nil {
			cfg.Log.Errorf("%v", err)
			cfg.Log.Errorf("skipping machine %s", res.Name)
			rep.Failed = append(rep.Failed, Failure{res.Name, err})
			continue
		}
		outs = append(outs, out)
		rep.Generated = append(rep.Generated, out.Name)
	}
	if cfg.DryRun {
		for _, o := range outs {
			printOutput(cfg, o)
		}
		return rep
	}
	for _, o := range outs {
		if err := writeOutput(cfg, o); err != nil {
			cfg.Log.Errorf("machine %s: %v", o.Name, err)
			rep.Failed = append(rep.Failed, Failure{o.Name, err})
			rep.Generated = slices.DeleteFunc(rep.Generated, func(n string) bool { return n == o.Name })
		}
	}
	if err := reconcile(cfg, rep.Generated); err != nil {
		cfg.Log.Errorf("%v", err)
	}
	cfg.Log.Debugf("generated %d machines, skipped %d", len(rep.Generated), len(rep.Failed))
	return rep
}

func convertResult(cfg Config, res conf.Result) (*Output, error) {
	if res.Err != nil {
		return nil, res.Err
	}
	if p := filepath.Join("/etc/systemd/nspawn", res.Name+".nspawn"); exists(cfg.host(p)) {
		cfg.Log.Warningf("%s: %s takes precedence over the settings berth generates for machine %s", res.Source, p, res.Name)
	}
	target := filepath.Join(NspawnDir, res.Name+".nspawn")
	if owned, err := ours(cfg.host(target)); err == nil && !owned {
		return nil, fmt.Errorf("%s: %s exists and was not written by berth; not overwriting it", res.Source, target)
	}
	return Convert(res.Machine, cfg.UnitDir)
}

func (cfg Config) host(p string) string { return filepath.Join(cfg.Root, p) }

func printOutput(cfg Config, o *Output) {
	fmt.Fprintf(cfg.Stdout, "# %s\n%s\n", filepath.Join(NspawnDir, o.Nspawn.Path), o.Nspawn.Content)
	fmt.Fprintf(cfg.Stdout, "# %s\n%s\n", filepath.Join(cfg.OutDir, o.DropIn.Path), o.DropIn.Content)
	if o.WantsLink != "" {
		fmt.Fprintf(cfg.Stdout, "# %s -> %s\n\n", filepath.Join(cfg.OutDir, o.WantsLink), o.LinkTarget)
	}
}

func writeOutput(cfg Config, o *Output) error {
	if err := writeAtomic(cfg.host(filepath.Join(NspawnDir, o.Nspawn.Path)), o.Nspawn.Content); err != nil {
		return err
	}
	if err := writeAtomic(cfg.host(filepath.Join(cfg.OutDir, o.DropIn.Path)), o.DropIn.Content); err != nil {
		return err
	}
	if o.WantsLink == "" {
		return nil
	}
	link := cfg.host(filepath.Join(cfg.OutDir, o.WantsLink))
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(link), err)
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replace %s: %w", link, err)
	}
	if err := os.Symlink(o.LinkTarget, link); err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	return nil
}

// writeAtomic writes through a temporary file and a rename, so systemd
// never reads half a file.
func writeAtomic(p string, content []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(p), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	_, err = tmp.Write(content)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// reconcile removes the .nspawn files berth wrote for machines this run did
// not generate. The generator directory needs none: systemd empties it
// before every run.
func reconcile(cfg Config, keep []string) error {
	dir := cfg.host(NspawnDir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reconcile %s: %w", NspawnDir, err)
	}
	var errs []error
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".nspawn")
		if !ok || slices.Contains(keep, name) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if owned, err := ours(p); err != nil || !owned {
			continue
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("remove stale %s: %w", filepath.Join(NspawnDir, e.Name()), err))
		}
	}
	return errors.Join(errs...)
}

// ours reports whether p is a regular file that starts with Header.
func ours(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return false, err
	}
	buf := make([]byte, len(Header))
	n, _ := io.ReadFull(f, buf)
	return bytes.Equal(buf[:n], []byte(Header)), nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
