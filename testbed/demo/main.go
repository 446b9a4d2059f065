// Command demo is the README's first command: it boots a throwaway Debian
// trixie systemd with berth installed, puts the example machine file in
// /etc/berth/machines, and shows the machine running from it.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-project/berth/testbed"
)

const script = `
systemctl start berthd.socket
show berth pool show
# Starting the machine builds its template (berth-template@bookworm) and
# clones the machine from it, because its image does not exist yet.
check web-started systemctl start systemd-nspawn@web.service
show cat /etc/berth/templates/bookworm.toml
show cat /etc/berth/machines/web.toml /etc/berth/machines/web.toml.d/10-template.toml
show berth list
show machinectl list-images
show systemctl status --no-pager --lines=0 systemd-nspawn@web.service
check web-serves-page wait_until 20 busybox wget -qO /tmp/page http://127.0.0.1:8080/
show cat /tmp/page
show berth snapshot web before-change
show berth export web /srv/web.tar.zst
show berth import /srv/web.tar.zst web-copy
show berth template create bookworm-less --suite bookworm --include less
show berth list
show cat /run/systemd/nspawn/web.nspawn
show systemctl cat systemd-nspawn@web.service
`

func main() {
	ctx := context.Background()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	src, err := testbed.SourceRoot()
	if err != nil {
		fail(err)
	}
	example, err := os.ReadFile(filepath.Join(src, "conf/example/web.toml"))
	if err != nil {
		fail(err)
	}
	fmt.Println("== preparing the testbed (the first run bootstraps Debian trixie, about a minute)")
	pool, err := testbed.Open(ctx, os.Stderr)
	if err != nil {
		fail(err)
	}
	base, err := pool.Base(ctx)
	if err != nil {
		fail(err)
	}
	build, err := testbed.Build(ctx, src, os.Stderr)
	if err != nil {
		fail(err)
	}
	fmt.Println("== booting systemd with berth installed, a template recipe and /etc/berth/machines/web.toml")
	res, err := pool.Run(ctx, base, build, testbed.Scenario{
		Name:    "demo",
		Timeout: 10 * time.Minute,
		Files: map[string]string{
			"/etc/berth/machines/web.toml":                    string(example),
			"/etc/berth/machines/web.toml.d/10-template.toml": "[Machine]\nTemplate = \"bookworm\"\n",
			"/etc/berth/templates/bookworm.toml":              "[Template]\nSuite = \"bookworm\"\nVariant = \"minbase\"\nInclude = [\"busybox\"]\n",
			"/srv/www/index.html":                             "hello from a berth machine\n",
		},
		Script: script,
	})
	if err != nil {
		fail(err)
	}
	fmt.Print(res.Output)
	if f := res.Failed(); len(f) > 0 {
		fail(fmt.Errorf("%s: %s", f[0].Name, f[0].Detail))
	}
	fmt.Println("== template built, machine cloned, started, serving, snapshotted, exported and imported; the testbed is gone again")
}
