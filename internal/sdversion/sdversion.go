// Package sdversion tells which systemd release will read what berth
// writes. systemd-nspawn parses the .nspawn files, and it drops a key it
// does not know with only a warning: berth refuses such keys up front
// instead, so it must know the version of the systemd-nspawn installed.
package sdversion

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// timeout bounds the probe: the generator runs at boot, where a hung
// child would hold up every machine.
const timeout = 5 * time.Second

// nspawn is systemd-nspawn where PATH does not find it (generators run
// with the manager's PATH, which may be short).
const nspawn = "/usr/bin/systemd-nspawn"

// Installed returns the installed systemd-nspawn's version, found once
// per process and only when first asked: most machine files use no key
// that needs it, and they pay nothing.
var Installed = sync.OnceValues(func() (int, error) {
	bin, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		bin = nspawn
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", bin, err)
	}
	v, err := Parse(out)
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", bin, err)
	}
	return v, nil
})

// Parse reads the release number from `systemd-nspawn --version`, whose
// first line is "systemd 257 (257.13-1)".
func Parse(out []byte) (int, error) {
	line, _, _ := bytes.Cut(out, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 2 || string(f[0]) != "systemd" {
		return 0, errors.New("no \"systemd N\" in its output")
	}
	v, err := strconv.Atoi(string(f[1]))
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a systemd version", f[1])
	}
	return v, nil
}
