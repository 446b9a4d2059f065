package testbed

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Scenario is one boot of the testbed.
type Scenario struct {
	Name string
	// Files are written into the snapshot before it boots, keyed by
	// absolute path inside it; a value starting with "#!" is made executable.
	Files map[string]string
	// Prepare runs on the host with the snapshot's root directory, after
	// Files are written, for set-up that needs more than file contents
	// (machine trees, symlinks).
	Prepare func(root string) error
	// Script is bash run inside the booted system after multi-user.target,
	// with lib.sh sourced: check, wait_until, fail.
	Script string
	// Timeout bounds the whole boot; default 3 minutes.
	Timeout time.Duration
	// LoopDevices lends the host's loop devices to the booted system, for
	// scenarios that set up loopback file systems.
	LoopDevices bool
	// Check, if set, looks at each boot's result beyond its checks (the
	// console, the journal); Boot calls it once per systemd.
	Check func(t *testing.T, res *Result)
	// Packages are installed beyond Packages, in a base of their own
	// (cached like the others) for the scenarios that need them.
	Packages []string
}

// Check is one assertion the scenario made.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// Result is what came back from a boot.
type Result struct {
	Checks  []Check
	Console string // everything the container printed
	Output  string // what the scenario recorded with show
	Journal string // the booted system's journal, saved when a check failed
}

// Failed returns the failed checks.
func (r *Result) Failed() []Check {
	var f []Check
	for _, c := range r.Checks {
		if !c.OK {
			f = append(f, c)
		}
	}
	return f
}

const (
	testDir    = "/usr/lib/berth-test"
	resultFile = "/var/lib/berth-test/result"
	outputFile = "/var/lib/berth-test/output"
	journalOut = "/var/lib/berth-test/journal"
)

// libSh is sourced by every scenario. check records one assertion;
// wait_until polls a condition for up to N seconds.
const libSh = `set -u
RESULT=` + resultFile + `
mkdir -p "$(dirname "$RESULT")"
failed=0
# check NAME CMD... — run CMD, record ok/not ok with its output.
check() {
	local name=$1; shift
	local out
	if out=$("$@" 2>&1); then
		echo "ok $name" >> "$RESULT"
	else
		failed=1
		{ echo "not ok $name"; printf '%s\n' "$out" | sed 's/^/# /'; } >> "$RESULT"
	fi
}
# wait_until SECONDS CMD... — retry CMD until it succeeds or time runs out.
wait_until() {
	local limit=$1; shift
	local end=$((SECONDS + limit))
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -ge "$end" ] && { "$@"; return 1; }
		sleep 0.2
	done
}
# show CMD... — run CMD and keep "$ CMD" and its output for the caller.
show() { { echo "\$ $*"; "$@" 2>&1; echo; } >> ` + outputFile + `; }
# fail NAME MESSAGE — record a failure directly.
fail() { failed=1; { echo "not ok $1"; echo "# $2"; } >> "$RESULT"; }
`

const runSh = `#!/bin/bash
. ` + testDir + `/lib.sh
. ` + testDir + `/scenario.sh
if [ "$failed" != 0 ]; then journalctl -b --no-pager -o short-monotonic > ` + journalOut + ` 2>&1; fi
echo "done" >> "$RESULT"
`

// The unit runs after the system is up and powers it off when done,
// whatever the outcome.
const unitFile = `[Unit]
Description=berth testbed scenario
After=multi-user.target machines.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=` + testDir + `/run.sh
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
`

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Build configures and compiles berth with meson once per process.
func Build(ctx context.Context, srcRoot string, log io.Writer) (string, error) {
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "berth-meson-")
		if buildErr != nil {
			return
		}
		for _, args := range [][]string{
			{"setup", buildDir, srcRoot, "--prefix=/usr", "--sysconfdir=/etc",
				"-Dsystemdsystemunitdir=/usr/lib/systemd/system",
				"-Dsystemdsystemgeneratordir=/usr/lib/systemd/system-generators",
				"-Dsystemdsystempresetdir=/usr/lib/systemd/system-preset", "-Dman=enabled",
				"-Dzshcompletiondir=/usr/share/zsh/vendor-completions"},
			{"compile", "-C", buildDir},
		} {
			cmd := exec.CommandContext(ctx, "meson", args...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("meson %s: %w\n%s", args[0], err, tail(string(out), 30))
				return
			}
		}
	})
	return buildDir, buildErr
}

// Run is RunOn the first of Systems.
func (p *Pool) Run(ctx context.Context, base, build string, sc Scenario) (*Result, error) {
	return p.RunOn(ctx, Systems[0], base, build, sc)
}

// RunOn boots one scenario on a fresh snapshot of base, a base of sys,
// and removes the snapshot afterwards (kept if BERTH_TESTBED_KEEP is set).
func (p *Pool) RunOn(ctx context.Context, sys System, base, build string, sc Scenario) (*Result, error) {
	if sc.Timeout == 0 {
		sc.Timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, sc.Timeout)
	defer cancel()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	// The start time is in the name: a snapshot's own times are the base's.
	name := fmt.Sprintf("tb-%s-%d-%s", sanitize(sc.Name), time.Now().Unix(), hex.EncodeToString(rnd[:]))
	root, err := p.Snapshot(ctx, base, name)
	if err != nil {
		return nil, err
	}
	if os.Getenv("BERTH_TESTBED_KEEP") == "" {
		defer func() {
			if err := p.DeleteSubvolume(context.Background(), root); err != nil {
				// Not silent: a tree the testbed cannot delete is a bug.
				fmt.Fprintf(os.Stderr, "testbed: remove %s: %v\n", root, err)
			}
		}()
	} else {
		fmt.Fprintf(p.log, "testbed: keeping %s\n", root)
	}
	if err := p.install(ctx, root, build, sc); err != nil {
		return nil, err
	}
	var console strings.Builder
	args := []string{"-q", "-b", "-D", root, "-M", name, "--register=no", "--keep-unit", "--console=passive"}
	if sc.LoopDevices {
		loops, _ := filepath.Glob("/dev/loop*")
		for _, l := range loops {
			args = append(args, "--bind="+l)
		}
	}
	cmd := exec.CommandContext(ctx, "systemd-nspawn", args...)
	cmd.Env = append(os.Environ(), sys.Env...)
	cmd.Stdout = &console
	cmd.Stderr = &console
	cmd.WaitDelay = 10 * time.Second
	runErr := cmd.Run()
	res := &Result{Console: console.String()}
	if err := readResult(filepath.Join(root, resultFile), res); err != nil {
		return res, fmt.Errorf("scenario %s: %w (nspawn: %v)\nconsole:\n%s", sc.Name, err, runErr, tail(res.Console, 60))
	}
	if o, err := os.ReadFile(filepath.Join(root, outputFile)); err == nil {
		res.Output = string(o)
	}
	if j, err := os.ReadFile(filepath.Join(root, journalOut)); err == nil {
		res.Journal = string(j)
	}
	return res, nil
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 30 {
		out = out[:30]
	}
	return out
}

func (p *Pool) install(ctx context.Context, root, build string, sc Scenario) error {
	// DESTDIR=ROOT meson install -C BUILD
	cmd := exec.CommandContext(ctx, "meson", "install", "-C", build, "--no-rebuild", "--quiet", "--destdir", root)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("meson install into %s: %w\n%s", root, err, tail(string(out), 20))
	}
	files := map[string]string{
		testDir + "/lib.sh":                      libSh,
		testDir + "/run.sh":                      runSh,
		testDir + "/scenario.sh":                 sc.Script,
		"/etc/systemd/system/berth-test.service": unitFile,
	}
	for k, v := range sc.Files {
		files[k] = v
	}
	for p, content := range files {
		if err := writeFile(root, p, content); err != nil {
			return err
		}
	}
	link := filepath.Join(root, "/etc/systemd/system/multi-user.target.wants/berth-test.service")
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	if err := os.Symlink("/etc/systemd/system/berth-test.service", link); err != nil {
		return err
	}
	if sc.Prepare != nil {
		return sc.Prepare(root)
	}
	return nil
}

func writeFile(root, p, content string) error {
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if strings.HasPrefix(content, "#!") {
		mode = 0o755
	}
	return os.WriteFile(full, []byte(content), mode)
}

func readResult(p string, res *Result) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("no result file (the scenario did not run)")
	}
	defer f.Close()
	done := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "ok "):
			res.Checks = append(res.Checks, Check{Name: line[3:], OK: true})
		case strings.HasPrefix(line, "not ok "):
			res.Checks = append(res.Checks, Check{Name: line[7:]})
		case strings.HasPrefix(line, "# ") && len(res.Checks) > 0:
			c := &res.Checks[len(res.Checks)-1]
			c.Detail += line[2:] + "\n"
		case line == "done":
			done = true
		}
	}
	if !done {
		return fmt.Errorf("the scenario did not finish (timeout or crash) after %d checks", len(res.Checks))
	}
	return nil
}
