package generator

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/berth-project/berth/conf"
	"github.com/berth-project/berth/internal/parallel"
	"github.com/berth-project/berth/internal/syslog"
)

// Config is one generator run.
type Config struct {
	// Root prefixes every path read and written, like systemctl --root.
	Root string
	// OutDir is the generator's normal output directory, as the target
	// system sees it (systemd passes /run/systemd/generator).
	OutDir string
	Paths
	// ConfigDirs overrides conf.SearchDirs when non-nil.
	ConfigDirs []string
	// Systemd overrides the release of the installed systemd-nspawn,
	// which keys newer than 257 are checked against.
	Systemd func() (int, error)
	// DryRun prints what would be written to Stdout and writes nothing.
	DryRun bool
	Stdout io.Writer
	Log    *syslog.Logger
}

func (cfg Config) host(p string) string { return filepath.Join(cfg.Root, p) }

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
// Machines are independent, so they are converted and written in parallel.
func Run(cfg Config) Report {
	sc := (&conf.Loader{Root: cfg.Root, Dirs: cfg.ConfigDirs, Systemd: cfg.Systemd}).Scan()
	defer sc.Close()
	for _, err := range sc.Errs {
		cfg.Log.Errorf("%v", err)
	}
	w := newWriter(cfg)
	defer w.close()
	// Each machine is loaded, converted and written by one worker and then
	// dropped, so memory stays small however many machines there are.
	errs := make([]error, len(sc.Names))
	var dry []*Output
	if cfg.DryRun {
		dry = make([]*Output, len(sc.Names))
	}
	parallel.For(len(sc.Names), func(i int) {
		res := sc.Load(i)
		if res.Err != nil {
			errs[i] = res.Err
			return
		}
		out, err := Convert(res.Machine, cfg.Paths)
		switch {
		case err != nil:
			errs[i] = fmt.Errorf("%s: %w", res.Source, err)
		case cfg.DryRun:
			dry[i] = out
		default:
			errs[i] = w.write(res.Source, out)
		}
	})
	var rep Report
	for i, name := range sc.Names {
		if errs[i] != nil {
			cfg.Log.Errorf("%v", errs[i])
			cfg.Log.Errorf("skipping machine %s", name)
			rep.Failed = append(rep.Failed, Failure{name, errs[i]})
			continue
		}
		if w.adminEtc[name] {
			cfg.Log.Warningf("/etc/systemd/nspawn/%s.nspawn takes precedence over the settings berth generates for machine %s", name, name)
		}
		rep.Generated = append(rep.Generated, name)
		if cfg.DryRun {
			printOutput(cfg, dry[i])
		}
	}
	switch {
	case cfg.DryRun:
	case len(sc.Errs) > 0:
		// Machines in what could not be read are not gone.
		cfg.Log.Warningf("not removing settings of machines that seem gone: part of the search path could not be read")
	default:
		if err := w.reconcile(rep.Generated); err != nil {
			cfg.Log.Errorf("%v", err)
		}
	}
	cfg.Log.Debugf("generated %d machines, skipped %d", len(rep.Generated), len(rep.Failed))
	return rep
}

func printOutput(cfg Config, o *Output) {
	fmt.Fprintf(cfg.Stdout, "# %s\n%s\n", filepath.Join(NspawnDir, o.Nspawn.Path), o.Nspawn.Content)
	fmt.Fprintf(cfg.Stdout, "# %s\n%s\n", filepath.Join(cfg.OutDir, o.DropIn.Path), o.DropIn.Content)
	if o.WantsLink != "" {
		fmt.Fprintf(cfg.Stdout, "# %s -> %s\n\n", filepath.Join(cfg.OutDir, o.WantsLink), o.LinkTarget)
	}
}
