package main

import (
	"fmt"
	"strings"

	"github.com/berth-project/berth/testbed"
)

// registryScript runs inside the testbed with Debian's docker-registry
// (TLS, htpasswd) on 127.0.0.1:5000: one bookworm minbase template is
// published and pulled by berth and by podman, and pulled as .tar.xz over
// local HTTP by importctl, each timed as an admin runs it (the command,
// then sync), medians of five alternating runs, each from empty caches
// and into a repository or name not used before. Then a clone of the
// template is published beside it and berthd's peak memory read.
const registryScript = testbed.RegistryUp + `
ROWS=/var/lib/berth-test/rows
ms() { date +%s%N; }
t() { sync; local s=$(ms); "$@" > /tmp/t.out 2>&1 && sync || { echo "FAILED: $*: $(tail -3 /tmp/t.out)" >> $ROWS; return 1; }; echo $(( ($(ms) - s) / 1000000 )); }
med() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
ratio() { awk "BEGIN { printf \"%.2f\", $1 / $2 }"; }
row() { echo "$1" >> $ROWS; }
sent() { sed -n 's/.*"sent": *\([0-9]*\).*/\1/p' $1; }
N=5
systemctl start berthd.socket
pid=$(systemctl show -P MainPID berthd.service)
berth template create tm --suite bookworm > /dev/null
mb=$(du -sm --apparent-size $M/tm | cut -f1)
# The same tree for podman (imported afresh each round) and as systemd's
# HTTP layout.
tar -C $M/tm --numeric-owner --xattrs --xattrs-include='*' -cf /srv/tm.tar .
mkdir -p /srv/www && berth export tm /srv/www/tm.tar.xz > /dev/null && (cd /srv/www && sha256sum tm.tar.xz > SHA256SUMS)
busybox httpd -p 127.0.0.1:8097 -h /srv/www
bp=(); pp=(); bl=(); pl=(); il=()
# Empty caches each round: berth's layers and blobs; podman's images and
# its record of which registry has which blob (else it mounts or skips).
for i in $(seq $N); do
	podman rmi -a -f > /dev/null 2>&1; rm -f /var/lib/containers/cache/blob-info-cache-v1.sqlite
	podman import /srv/tm.tar localhost/tm > /dev/null
	rm -rf /var/cache/berth/layers
	bp+=($(t berth publish tm $R/bench/berth$i:1))
	pp+=($(t podman push localhost/tm $R/bench/podman$i:1))
	rm -rf /var/cache/berth/blobs
	bl+=($(t berth pull docker://$R/bench/berth$i:1 bp$i))
	podman rmi -a -f > /dev/null 2>&1; rm -f /var/lib/containers/cache/blob-info-cache-v1.sqlite
	pl+=($(t sh -c "podman pull $R/bench/podman$i:1 && podman image mount $R/bench/podman$i:1"))
	il+=($(t importctl pull-tar --class=machine --verify=no --keep-download=no http://127.0.0.1:8097/tm.tar.xz ip$i))
done
row "| publish ($mb MB tree) | podman push (gzip) | $(med ${pp[@]}) ms (${pp[*]}) |"
row "| | berth publish (zstd) | $(med ${bp[@]}) ms (${bp[*]}) |"
row "| pull | podman pull + image mount | $(med ${pl[@]}) ms (${pl[*]}) |"
row "| | importctl pull-tar of the .tar.xz over HTTP | $(med ${il[@]}) ms (${il[*]}) |"
row "| | berth pull | $(med ${bl[@]}) ms (${bl[*]}) |"
# A clone with a small change, published beside its template, both from
# empty caches into repositories of their own.
berth clone tm web > /dev/null && echo hello > $M/web/srv/index.html && rm -f $M/web/etc/motd
rm -rf /var/cache/berth/layers /var/cache/berth/blobs
berth publish --json tm $R/bench/tm:1 > /tmp/tm.json
berth publish --json web $R/bench/web:1 > /tmp/web.json
mkdir -p /var/cache/berth/blobs
before=$(du -sb /var/cache/berth/blobs | cut -f1)
berth pull docker://$R/bench/tm:1 tmp1 > /dev/null
mid=$(du -sb /var/cache/berth/blobs | cut -f1)
berth pull docker://$R/bench/web:1 tmp2 > /dev/null
after=$(du -sb /var/cache/berth/blobs | cut -f1)
rss=$(awk '/VmHWM/ {print $2}' /proc/$(systemctl show -P MainPID berthd.service)/status)
row "Ratios: berth publish is **$(ratio $(med ${pp[@]}) $(med ${bp[@]}))×** faster than podman push (target ≥ 2×); berth pull is **$(ratio $(med ${pl[@]}) $(med ${bl[@]}))×** faster than podman pull (target ≥ 2×) and **$(ratio $(med ${il[@]}) $(med ${bl[@]}))×** faster than importctl pull-tar of the .tar.xz (target ≥ 2×)."
row "A clone of the template published beside it sent $(sent /tmp/web.json) bytes against the template's $(sent /tmp/tm.json): **$(ratio $(sent /tmp/web.json) $(sent /tmp/tm.json))** (target < 0.10); pulled after the template it downloaded $((after - mid)) bytes against $((mid - before)). berthd's peak RSS (VmHWM) over all of it: $(( rss / 1024 )) MB (target < 256 MB)."
check done true
`

func benchRegistry() error {
	lines, err := runScript(testbed.Scenario{Name: "bench-registry", Files: testbed.RegistryFiles,
		Prepare: testbed.WriteTestCA, Script: registryScript}, false, testbed.RegistryPackages...)
	if err != nil {
		return err
	}
	fmt.Printf("\n## Registries: publish and pull, berth against podman and importctl (systemd 257)\n\n")
	fmt.Printf("Inside the testbed (Debian trixie, systemd 257, btrfs), Debian's docker-registry with TLS and htpasswd on 127.0.0.1, one bookworm minbase template. Each time is the command and a sync after it, from a synced start, in milliseconds: the median of five runs, alternating between the tools, each from empty caches into a repository or name not used before, all five in brackets.\n\n")
	fmt.Println("| operation | command | time |")
	fmt.Println("|---|---|---|")
	for _, line := range lines {
		if strings.HasPrefix(line, "| ") {
			fmt.Println(line)
		}
	}
	fmt.Println()
	for _, line := range lines {
		if !strings.HasPrefix(line, "| ") {
			fmt.Println(line + "  ")
		}
	}
	return nil
}
