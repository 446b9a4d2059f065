package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/berth-project/berth/internal/archive"
	"github.com/berth-project/berth/testbed"
)

// machinesScript runs inside the testbed, where machinectl has machined
// and importd: export, import and clone of one bookworm minbase image,
// berth against machinectl and against tar | zstd, each timed end to end
// as an admin runs it (the command, then sync) at millisecond resolution,
// medians of five alternating runs; then berthd's peak memory after it
// has imported hostile archives. It prints table rows.
const machinesScript = `
R=/var/lib/berth-test/rows
ms() { date +%s%N; }
# t CMD...: milliseconds for CMD and the sync after it, from a synced start.
t() { sync; local s=$(ms); "$@" > /dev/null 2>&1 && sync || { echo "FAILED: $*" >> $R; return 1; }; echo $(( ($(ms) - s) / 1000000 )); }
med() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
ratio() { awk "BEGIN { printf \"%.2f\", $1 / $2 }"; }
row() { echo "$1" >> $R; }
size() { stat -c %s "$1"; }
N=5
systemctl start berthd.socket
berth template create tm --suite bookworm > /dev/null
berth clone tm c1 > /dev/null
mb=$(du -sm --apparent-size /var/lib/machines/c1 | cut -f1)
mkdir -p /srv/out
tz=(); be=()
for i in $(seq $N); do
	rm -f /srv/out/tar.tar.zst /srv/out/b.tar.zst
	tz+=($(t sh -c "tar -C /var/lib/machines/c1 --numeric-owner --xattrs --acls -cf - . | zstd -q -T0 > /srv/out/tar.tar.zst"))
	# berthd socket-activated for each run, as an admin meets it.
	systemctl stop berthd.service
	be+=($(t berth export c1 /srv/out/b.tar.zst))
done
me=$(t machinectl export-tar --format=xz c1 /srv/out/mc.tar.xz)
bx=$(t berth export c1 /srv/out/b.tar.xz)
mi=(); bi=()
for i in $(seq $N); do
	mi+=($(t machinectl import-tar /srv/out/mc.tar.xz mimp$i))
	bi+=($(t berth import /srv/out/b.tar.zst bimp$i))
done
row "| export ($mb MB tree) | machinectl export-tar --format=xz | $me ms (1 run) | $(size /srv/out/mc.tar.xz) B |"
row "| | tar --xattrs --acls \\| zstd -T0 | $(med ${tz[@]}) ms (${tz[*]}) | $(size /srv/out/tar.tar.zst) B |"
row "| | berth export (zstd), berthd socket-activated | $(med ${be[@]}) ms (${be[*]}) | $(size /srv/out/b.tar.zst) B |"
row "| | berth export .tar.xz | $bx ms (1 run) | $(size /srv/out/b.tar.xz) B |"
row "| import | machinectl import-tar (xz) | $(med ${mi[@]}) ms (${mi[*]}) | |"
row "| | berth import (zstd) | $(med ${bi[@]}) ms (${bi[*]}) | |"
row "Ratios: berth export (zstd) is **$(ratio $me $(med ${be[@]}))×** faster than machinectl's xz (target ≥ 50×) and **$(ratio $(med ${be[@]}) $(med ${tz[@]}))×** the time of tar | zstd -T0 (target ≤ 1.3×); berth's .tar.xz is $(ratio $me $bx)× faster than machinectl's (target ≥ 1.6×) at $(ratio $(size /srv/out/b.tar.xz) $(size /srv/out/mc.tar.xz)) of its size (target within 5%); berth import is **$(ratio $(med ${mi[@]}) $(med ${bi[@]}))×** faster than machinectl import-tar of the xz archive (target ≥ 2×)."
# Hostile archives: 1,000 directories with 1 MiB headers each, a 1 PiB
# sparse hole (cancelled by the caller after 10 s), a path 1,100
# directories deep, a stream cut at an entry boundary.
systemctl stop berthd.service
berth list > /dev/null
pid=$(systemctl show -P MainPID berthd.service)
berth import /srv/hostile/pax.tar.zst hpax > /dev/null 2>&1
timeout 10 berth import /srv/hostile/sparse.tar hsparse > /dev/null 2>&1
berth import /srv/hostile/deep.tar hdeep > /dev/null 2>&1
berth import /srv/hostile/noend.tar hnoend > /dev/null 2>&1
sleep 1
left=$(ls -A /var/lib/machines | grep -c '^\.#berth-' || true)
rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
row "berthd peak RSS (VmHWM) over four hostile imports: $(( rss / 1024 )) MB (target < 256 MB); temporary trees left: $left."
# Clone: the template, then one with 1.1 GB more data.
btrfs -q subvolume snapshot /var/lib/machines/tm /var/lib/machines/big
head -c 1100M /dev/urandom > /var/lib/machines/big/data
berth template adopt big >/dev/null
for src in tm big; do
	mc=(); bc=()
	for i in $(seq $N); do
		mc+=($(t machinectl clone $src m$src$i)); bc+=($(t berth clone $src b$src$i))
	done
	row "| clone $src ($(du -sm --apparent-size /var/lib/machines/$src | cut -f1) MB) | $(med ${mc[@]}) ms (${mc[*]}) | $(med ${bc[@]}) ms (${bc[*]}) | $(ratio $(med ${bc[@]}) $(med ${mc[@]}))× |"
done
check done true
`

// hostileFiles are the hostile archives machinesScript imports.
func hostileFiles() (map[string]string, error) {
	var pax bytes.Buffer
	z, err := archive.Compressor(archive.Zstd, &pax)
	if err != nil {
		return nil, err
	}
	if err := testbed.WritePAXBomb(z, 1000, 1<<20); err != nil {
		return nil, err
	}
	if err := z.Close(); err != nil {
		return nil, err
	}
	var deep bytes.Buffer
	tw := tar.NewWriter(&deep)
	tw.WriteHeader(&tar.Header{Name: strings.Repeat("d/", 1100) + "f", Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatPAX})
	tw.Close()
	var noEnd bytes.Buffer
	tw = tar.NewWriter(&noEnd)
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.Flush()
	return map[string]string{
		"/srv/hostile/pax.tar.zst": pax.String(),
		"/srv/hostile/sparse.tar":  string(testbed.SparseBomb(1 << 50)),
		"/srv/hostile/deep.tar":    deep.String(),
		"/srv/hostile/noend.tar":   noEnd.String(),
	}, nil
}

// benchMachines boots the testbed and runs machinesScript there.
func benchMachines() error {
	files, err := hostileFiles()
	if err != nil {
		return err
	}
	lines, err := runScript(testbed.Scenario{Name: "bench-machines", Files: files, Script: machinesScript}, true)
	if err != nil {
		return err
	}
	fmt.Printf("\n## Machines: export, import, clone, berth against machinectl (systemd 257)\n\n")
	fmt.Printf("Inside the testbed (Debian trixie, systemd 257, btrfs), one bookworm minbase machine. Each time is the command and a sync after it, from a synced start, in milliseconds: the median of five runs, alternating between the tools, all five in brackets.\n\n")
	fmt.Println("| operation | command | time | archive size |")
	fmt.Println("|---|---|---|---|")
	for _, line := range lines {
		if strings.HasPrefix(line, "| ") && !strings.HasPrefix(line, "| clone") {
			fmt.Println(line)
		}
	}
	fmt.Println()
	for _, line := range lines {
		if !strings.HasPrefix(line, "| ") {
			fmt.Println(line + "  ")
		}
	}
	fmt.Println("\n| clone | machinectl clone | berth clone | berth / machinectl (target ≤ 1.2×) |")
	fmt.Println("|---|---|---|---|")
	for _, line := range lines {
		if strings.HasPrefix(line, "| clone") {
			fmt.Println(line)
		}
	}
	return nil
}

// runScript runs a benchmark script in the testbed (the first system, with
// packages added to its base) and returns the rows it wrote. settle waits
// for the pool's file system to be quiet first.
func runScript(sc testbed.Scenario, settle bool, packages ...string) ([]string, error) {
	ctx := context.Background()
	pool, err := testbed.Open(ctx, os.Stderr)
	if err != nil {
		return nil, err
	}
	base, err := pool.Base(ctx, packages...)
	if err != nil {
		return nil, err
	}
	src, err := testbed.SourceRoot()
	if err != nil {
		return nil, err
	}
	build, err := testbed.Build(ctx, src, os.Stderr)
	if err != nil {
		return nil, err
	}
	if settle {
		if err := pool.Settle(ctx); err != nil {
			return nil, err
		}
	}
	sc.Script += "\ncp /var/lib/berth-test/rows /var/lib/berth-test/output\n"
	sc.Timeout = 30 * time.Minute
	res, err := pool.Run(ctx, base, build, sc)
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSpace(res.Output), "\n"), nil
}
