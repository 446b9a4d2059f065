package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/berth-project/berth/testbed"
)

// machinesScript runs inside the testbed, where machinectl has machined
// and importd: export, import and clone of one bookworm minbase image,
// berth against machinectl and against tar | zstd, printing table rows.
const machinesScript = `
# Each timed command starts with nothing left to write back from the last.
t() { sync; local s=$(date +%s.%N); "$@" > /dev/null 2>&1 || { echo "FAILED: $*" >> /var/lib/berth-test/rows; return 1; }; awk "BEGIN { printf \"%.2f\", $(date +%s.%N) - $s }"; }
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
row() { echo "$1" >> /var/lib/berth-test/rows; }
size() { stat -c %s "$1"; }
systemctl start berthd.socket
berth template create tm --suite bookworm > /dev/null
berth clone tm c1 > /dev/null
mb=$(du -sm --apparent-size /var/lib/machines/c1 | cut -f1)
mkdir -p /srv/out
me=$(t machinectl export-tar --format=xz c1 /srv/out/mc.tar.xz)
tz=$(t sh -c "tar -C /var/lib/machines/c1 --numeric-owner --xattrs --acls -cf - . | zstd -q -T0 > /srv/out/tar.tar.zst")
be=$(t berth export c1 /srv/out/b.tar.zst)
bx=$(t berth export c1 /srv/out/b.tar.xz)
pid=$(systemctl show -P MainPID berthd.service)
mi=$(t machinectl import-tar /srv/out/mc.tar.xz mimp)
bi=$(t berth import /srv/out/b.tar.zst bimp)
rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
row "| export ($mb MB tree) | machinectl export-tar --format=xz | $me s | $(size /srv/out/mc.tar.xz) B |"
row "| | tar --xattrs --acls \\| zstd -T0 | $tz s | $(size /srv/out/tar.tar.zst) B |"
row "| | berth export (zstd) | $be s | $(size /srv/out/b.tar.zst) B |"
row "| | berth export .tar.xz | $bx s | $(size /srv/out/b.tar.xz) B |"
row "| import | machinectl import-tar (xz) | $mi s | |"
row "| | berth import (zstd) | $bi s | |"
row "Ratios: berth export (zstd) is **$(calc "$me / $be")×** faster than machinectl's xz (target ≥ 50×) and $(calc "$be / $tz")× the time of tar | zstd -T0 (target ≤ 1.3×); berth's .tar.xz is $(calc "$me / $bx")× faster than machinectl's (target ≥ 1.6×) at $(calc "$(size /srv/out/b.tar.xz) / $(size /srv/out/mc.tar.xz)") of its size (target within 5%); berth import is **$(calc "$mi / $bi")×** faster than machinectl import-tar of the xz archive (target ≥ 2×)."
row "berthd peak RSS (VmHWM) over the exports and the import: $rss kB (target < 256 MB)."
# Clone: the 190 MB template, then a template with 1 GB more data.
for i in 1 2 3; do
	mc=$(t machinectl clone tm mcl$i); bc=$(t berth clone tm bcl$i)
	row "| clone $mb MB, run $i | machinectl clone $mc s | berth clone $bc s |"
done
btrfs -q subvolume snapshot /var/lib/machines/tm /var/lib/machines/big
head -c 1100M /dev/urandom > /var/lib/machines/big/data
berth template adopt big >/dev/null
for i in 1 2 3; do
	mc=$(t machinectl clone big mbig$i); bc=$(t berth clone big bbig$i)
	row "| clone 1.3 GB, run $i | machinectl clone $mc s | berth clone $bc s |"
done
check done true
`

// benchMachines boots the testbed and runs machinesScript there.
func benchMachines() error {
	ctx := context.Background()
	pool, err := testbed.Open(ctx, os.Stderr)
	if err != nil {
		return err
	}
	base, err := pool.Base(ctx)
	if err != nil {
		return err
	}
	src, err := testbed.SourceRoot()
	if err != nil {
		return err
	}
	build, err := testbed.Build(ctx, src, os.Stderr)
	if err != nil {
		return err
	}
	if err := pool.Settle(ctx); err != nil {
		return err
	}
	res, err := pool.Run(ctx, base, build, testbed.Scenario{Name: "bench-machines", Script: machinesScript + "\ncp /var/lib/berth-test/rows /var/lib/berth-test/output\n", Timeout: 20 * time.Minute})
	if err != nil {
		return err
	}
	fmt.Printf("\n## Machines: export, import, clone, berth against machinectl (systemd 257)\n\n")
	fmt.Printf("One run inside the testbed (Debian trixie, systemd 257, btrfs), one bookworm minbase machine; wall times from date(1).\n\n")
	fmt.Println("| operation | command | time | archive size |")
	fmt.Println("|---|---|---|---|")
	for _, line := range strings.Split(strings.TrimSpace(res.Output), "\n") {
		if strings.HasPrefix(line, "| ") && !strings.HasPrefix(line, "| clone") {
			fmt.Println(line)
		}
	}
	fmt.Println()
	for _, line := range strings.Split(strings.TrimSpace(res.Output), "\n") {
		if strings.HasPrefix(line, "| clone") {
			fmt.Println(strings.TrimPrefix(strings.TrimSuffix(line, " |"), "| ") + "  ")
		} else if !strings.HasPrefix(line, "| ") {
			fmt.Println(line + "  ")
		}
	}
	return nil
}
