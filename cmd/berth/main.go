// Command berth manages systemd-nspawn machines; see berth(1).
package main

import (
	"os"

	"github.com/berth-project/berth/internal/cli"
)

func main() { os.Exit(cli.Run(os.Args[1:], os.Stdout, os.Stderr)) }
