//go:build testbed

package generator_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/testbed"
)

// The argv the web machine's payload is started with: every character that
// unit-file or shell quoting could mangle.
var trickyArgs = []string{"a b", "it's", `say "hi"`, `back\slash`, "$HOME", "100%", "%i", "", `trailing\`, "  padded  ", "'"}

// payload writes what the container sees into /out (bound from the host),
// then idles.
const payload = `printf '%s\n' "$@" > /out/argv; env > /out/env; hostname > /out/hostname; ` +
	`if touch /ro/probe 2>/dev/null; then echo rw; else echo ro; fi > /out/ro; exec sleep 1000`

func tomlList(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = `'''` + w + `'''`
		if strings.Contains(w, "'") {
			q[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(w) + `"`
		}
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// TestBootAndReload proves the generator on a real systemd: machines come
// up at boot with exactly the settings of their file, drop-ins and
// machines.d; disabled machines start on demand; masked and broken files
// are skipped without harming the rest; daemon-reload picks up changes.
func TestBootAndReload(t *testing.T) {
	params := append([]string{"/bin/sh", "-c", payload, "sh"}, trickyArgs...)
	var want strings.Builder
	for _, a := range trickyArgs {
		want.WriteString(a + "\n")
	}
	files := map[string]string{
		"/etc/berth/machines/web.toml": `
[Machine]
Enable = true
[Exec]
Boot = false
Hostname = "webhost"
PrivateUsers = false
Parameters = ` + tomlList(params) + `
Environment = { GREETING = "hello world", QUOTED = "it's \"quoted\" 100% $HOME" }
[Files]
Bind = ["/srv/out-web:/out"]
[Network]
VirtualEthernet = false
[Unit]
Description = "Web 100% up"
[Service]
MemoryMax = "64M"
`,
		// Drop-ins: machines.d applies to all, web.toml.d only to web; a
		// later table merges, a later array appends.
		"/usr/lib/berth/machines.d/10-all.toml": "[Service]\nTasksMax = 77\n[Exec]\nEnvironment = { FROM_ALL = \"yes\" }\n",
		"/etc/berth/machines/web.toml.d/20-web.toml": "[Exec]\nEnvironment = { GREETING = \"overridden\" }\n" +
			"[Files]\nBindReadOnly = [\"/srv/ro:/ro\"]\n[Service]\nCPUQuota = \"150%\"\n",
		"/srv/out-web/.keep": "",
		"/srv/ro/file":       "read-only\n",
		// Disabled: generated, not started at boot.
		"/etc/berth/machines/idle.toml": "[Exec]\nBoot = false\nParameters = [\"/bin/sleep\", \"1000\"]\n[Network]\nVirtualEthernet = false\n",
		// Masked: the /etc symlink to /dev/null hides the /usr/lib file.
		"/usr/lib/berth/machines/gone.toml": "[Machine]\nEnable = true\n[Exec]\nBoot = false\nParameters = [\"/bin/sleep\", \"1000\"]\n[Network]\nVirtualEthernet = false\n",
		// Broken: enabled, but a typo skips it; the others still run.
		"/etc/berth/machines/broken.toml": "[Machine]\nEnable = true\n[Exec]\nBoot = false\nParamters = [\"/bin/sleep\", \"1000\"]\n",
	}
	script := `
U=systemd-nspawn@web.service
check web-running-at-boot wait_until 20 systemctl is-active $U
check web-registered-with-machined wait_until 10 machinectl show web
check web-argv-intact wait_until 10 diff -u /srv/expected-argv /srv/out-web/argv
check web-env-from-file grep -qx 'QUOTED=it'"'"'s "quoted" 100% $HOME' /srv/out-web/env
check web-env-table-merged grep -qx 'GREETING=overridden' /srv/out-web/env
check web-env-machines.d grep -qx 'FROM_ALL=yes' /srv/out-web/env
check web-hostname grep -qx webhost /srv/out-web/hostname
check web-bind-readonly-dropin grep -qx ro /srv/out-web/ro
check unit-memorymax test "$(systemctl show -P MemoryMax $U)" = 67108864
check unit-tasksmax-machines.d test "$(systemctl show -P TasksMax $U)" = 77
check unit-cpuquota-dropin test "$(systemctl show -P CPUQuotaPerSecUSec $U)" = 1.500000s
check unit-description-percent test "$(systemctl show -P Description $U)" = "Web 100% up"
check unit-sourcepath test "$(systemctl show -P SourcePath $U)" = /etc/berth/machines/web.toml
check unit-dropin-listed sh -c "systemctl show -P DropInPaths $U | grep -q /run/systemd/generator/$U.d/50-berth.conf"

check idle-not-started-at-boot sh -c '! systemctl is-active systemd-nspawn@idle.service'
check idle-starts-on-demand systemctl start systemd-nspawn@idle.service
check idle-running systemctl is-active systemd-nspawn@idle.service

check masked-not-generated test ! -e /run/systemd/nspawn/gone.nspawn -a ! -e /run/systemd/generator/systemd-nspawn@gone.service.d
check masked-not-running sh -c '! systemctl is-active systemd-nspawn@gone.service'
check broken-not-generated test ! -e /run/systemd/nspawn/broken.nspawn
check broken-not-running sh -c '! systemctl is-active systemd-nspawn@broken.service'

# daemon-reload: idle's file goes, new.toml and a second broken file come.
systemctl stop systemd-nspawn@idle.service
rm /etc/berth/machines/idle.toml
cp -a /var/lib/machines/idle /var/lib/machines/fresh
printf '[Machine]\nEnable = true\n[Exec]\nBoot = false\nParameters = ["/bin/sleep", "1000"]\n[Network]\nVirtualEthernet = false\n' > /etc/berth/machines/fresh.toml
printf '[Exec]\nBoot = "sometimes"\n' > /etc/berth/machines/broken2.toml
since=$(date '+%Y-%m-%d %H:%M:%S')
systemctl daemon-reload
check reload-removes-stale-nspawn test ! -e /run/systemd/nspawn/idle.nspawn
check reload-removes-stale-dropin test ! -e /run/systemd/generator/systemd-nspawn@idle.service.d
check reload-adds-new test -e /run/systemd/nspawn/fresh.nspawn
check reload-new-starts systemctl start systemd-nspawn@fresh.service
check reload-web-untouched systemctl is-active systemd-nspawn@web.service
check reload-error-in-journal wait_until 10 sh -c "journalctl --since '$since' -t berth-generator | grep -F '/etc/berth/machines/broken2.toml:2: [Exec] Boot: expected a boolean'"
`
	testbed.Boot(t, testbed.Scenario{
		Name:   "boot-and-reload",
		Files:  files,
		Script: script,
		Prepare: func(root string) error {
			for _, m := range []string{"web", "idle", "gone", "broken"} {
				if err := testbed.BusyboxMachine(root, m); err != nil {
					return err
				}
			}
			if err := os.WriteFile(filepath.Join(root, "srv/expected-argv"), []byte(want.String()), 0o644); err != nil {
				return err
			}
			return os.Symlink("/dev/null", filepath.Join(root, "etc/berth/machines/gone.toml"))
		},
		// At boot, a container has no /dev/kmsg and no journal yet:
		// generator errors reach the console, where systemd shows
		// generator output.
		Check: func(t *testing.T, res *testbed.Result) {
			if !strings.Contains(res.Console, "/etc/berth/machines/broken.toml:5: unknown key \"Paramters\" in [Exec]") {
				t.Errorf("boot console does not report broken.toml:\n%s", res.Console)
				t.Logf("journal: %s", res.Journal)
			}
		},
	})
}

// TestBadInputsAtBoot boots with what a messy /etc holds: a FIFO, a
// 100 MB file and a 5 MB file of unknown keys named *.toml, a drop-in
// whose name holds newlines, and a search directory that cannot be read.
// Boot finishes and the good machines run; a torn .nspawn is replaced at
// daemon-reload.
func TestBadInputsAtBoot(t *testing.T) {
	good := "[Machine]\nEnable = true\n[Exec]\nBoot = false\nParameters = [\"/bin/sleep\", \"1000\"]\n[Network]\nVirtualEthernet = false\n"
	var unknown strings.Builder
	unknown.WriteString("[Exec]\n")
	for i := 0; unknown.Len() < 5<<20; i++ {
		unknown.WriteString("NoSuchKey" + strconv.Itoa(i) + " = 1\n")
	}
	evilDropIn := "x\nExecStartPre=touch evil\n.toml"
	script := `
check generator-did-not-fail sh -c "! journalctl -b -o cat | grep -E 'berth-generator (failed|terminated|timed out)'"
check ok1-running wait_until 20 systemctl is-active systemd-nspawn@ok1.service
check ok2-running wait_until 20 systemctl is-active systemd-nspawn@ok2.service
check no-injected-setting sh -c "! grep -rq '^ExecStartPre=touch' /run/systemd/generator/ /run/systemd/nspawn/"
check dropin-name-quoted grep -qF '# Drop-in: "/etc/berth/machines/ok1.toml.d/x\nExecStartPre=touch evil\n.toml"' /run/systemd/nspawn/ok1.nspawn
check bad-not-generated sh -c '! ls /run/systemd/nspawn | grep -E "^(fifo|huge|unknown)"'
# A torn .nspawn, as a killed older generator left one, is replaced.
systemctl stop systemd-nspawn@ok2.service
: > /run/systemd/nspawn/ok2.nspawn
systemctl daemon-reload
check reload-counts-errors wait_until 10 sh -c "journalctl -t berth-generator -o cat | grep -q 'unknown.toml:[0-9]*: [0-9]* more errors from here on not shown'"
check torn-replaced grep -q '^# Generated by berth-generator' /run/systemd/nspawn/ok2.nspawn
check ok2-starts-again systemctl start systemd-nspawn@ok2.service
check no-temporary-files sh -c "! find /run/systemd/nspawn /run/systemd/generator -name '*.berth-tmp' | grep -q ."
`
	testbed.Boot(t, testbed.Scenario{
		Name: "bad-inputs-at-boot",
		Files: map[string]string{
			"/etc/berth/machines/ok1.toml":                 good,
			"/etc/berth/machines/ok1.toml.d/" + evilDropIn: "[Exec]\nEnvironment = { X = \"1\" }\n",
			"/etc/berth/machines/ok2.toml":                 good,
			"/etc/berth/machines/unknown.toml":             unknown.String(),
		},
		Script: script,
		Prepare: func(root string) error {
			for _, m := range []string{"ok1", "ok2"} {
				if err := testbed.BusyboxMachine(root, m); err != nil {
					return err
				}
			}
			dir := filepath.Join(root, "etc/berth/machines")
			if err := unix.Mkfifo(filepath.Join(dir, "fifo.toml"), 0o644); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, "huge.toml"), nil, 0o644); err != nil {
				return err
			}
			if err := os.Truncate(filepath.Join(dir, "huge.toml"), 100<<20); err != nil {
				return err
			}
			// A search directory that cannot be read: a symlink loop.
			os.MkdirAll(filepath.Join(root, "usr/lib/berth"), 0o755)
			os.Remove(filepath.Join(root, "usr/lib/berth/machines"))
			return os.Symlink("machines", filepath.Join(root, "usr/lib/berth/machines"))
		},
		// At boot the errors reach the console, the first ones first.
		Check: func(t *testing.T, res *testbed.Result) {
			for _, want := range []string{"fifo.toml: cannot read: not a regular file", "huge.toml: cannot read: larger than", "/usr/lib/berth/machines: cannot read directory", "unknown.toml:2: unknown key"} {
				if !strings.Contains(res.Console, want) {
					t.Errorf("the console does not report %q", want)
				}
			}
		},
	})
}

// TestNspawnKeysBySystemd proves systemd.nspawn(5) as of 262 on both
// releases. On 262 the keys 258-262 added reach systemd-nspawn and take
// effect: a machine joins a named network namespace, another has AF_INET
// taken away, and PrivateUsers = "managed" is handed to systemd-nsresourced
// (whose allocation this kernel cannot do). On 257 the generator refuses
// each, naming the key and the release that has it. On both, systemd's rule
// that managed user namespaces need private networking is applied before
// anything is written, and a plain machine beside the refused ones runs.
func TestNspawnKeysBySystemd(t *testing.T) {
	sleeper := "[Exec]\nBoot = false\nPrivateUsers = false\nParameters = [\"/bin/sleep\", \"1000\"]\n"
	files := map[string]string{
		"/etc/berth/machines/plain.toml": "[Machine]\nEnable = true\n" + sleeper + "[Network]\nVirtualEthernet = false\n",
		"/etc/berth/machines/netns.toml": sleeper + "[Network]\nNamespacePath = \"/run/netns/web\"\n",
		"/etc/berth/machines/restricted.toml": "[Exec]\nBoot = false\nPrivateUsers = false\n" +
			"Parameters = [\"/bin/sh\", \"-c\", \"busybox nc -w 1 127.0.0.1 9 > /out/inet 2>&1; exec sleep 1000\"]\n" +
			"RestrictAddressFamilies = [\"AF_UNIX\"]\n[Files]\nBind = [\"/srv/out-restricted:/out\"]\n[Network]\nPrivate = true\n",
		"/etc/berth/machines/managed.toml": "[Exec]\nBoot = false\nPrivateUsers = \"managed\"\nPrivateUsersDelegate = 1\n" +
			"Parameters = [\"/bin/sleep\", \"1000\"]\n[Network]\nPrivate = true\n",
		"/etc/berth/machines/hostnet.toml": "[Exec]\nBoot = false\nPrivateUsers = \"managed\"\nParameters = [\"/bin/sleep\", \"1000\"]\n[Network]\nVirtualEthernet = false\n",
		"/srv/out-restricted/.keep":        "",
	}
	script := `
J="journalctl -o cat -t berth-generator"
systemctl daemon-reload  # the journal is up now: the generator's errors land there
check plain-running wait_until 20 systemctl is-active systemd-nspawn@plain.service
check managed-needs-private-network wait_until 10 sh -c "$J | grep -F '/etc/berth/machines/hostnet.toml:3: [Exec] PrivateUsers = \"managed\" needs private networking'"
check hostnet-not-generated test ! -e /run/systemd/nspawn/hostnet.nspawn
if [ "$SYSTEMD_VERSION" -ge 262 ]; then
	for m in netns restricted managed; do check $m-generated test -e /run/systemd/nspawn/$m.nspawn; done
	mkdir -p /run/netns && mount -t tmpfs netns /run/netns && mount --make-private /run/netns &&
		touch /run/netns/web && unshare --net=/run/netns/web true
	check netns-starts systemctl start systemd-nspawn@netns.service
	check netns-joined wait_until 10 sh -c 'test "$(stat -L -c %i /proc/$(machinectl show --property=Leader --value netns)/ns/net)" = "$(stat -L -c %i /run/netns/web)"'
	check restricted-starts systemctl start systemd-nspawn@restricted.service
	check restricted-af-inet-denied wait_until 10 grep -q 'Address family not supported' /srv/out-restricted/inet
	systemctl start systemd-nspawn@managed.service
	show journalctl -o cat -u systemd-nspawn@managed.service
	check managed-pulls-in-nsresourced systemctl is-active systemd-nsresourced.socket systemd-mountfsd.socket
	check managed-goes-to-nsresourced wait_until 10 sh -c "journalctl -o cat -u systemd-nspawn@managed.service | grep -i 'allocate user namespace'"
	# systemd's parser prefixes what it cannot use with FILE:LINE.
	check nspawn-knows-every-key sh -c "! journalctl -o cat -u 'systemd-nspawn@*' | grep -E 'Unknown key|Failed to parse|[.]nspawn:[0-9]+:'"
else
	refused() { check "refused-$1" wait_until 10 sh -c "$J | grep -F '/etc/berth/machines/$2'"; }
	refused NamespacePath "netns.toml:6: [Network] NamespacePath needs systemd 259 or later; this host has systemd 257"
	refused RestrictAddressFamilies "restricted.toml:5: [Exec] RestrictAddressFamilies needs systemd 261 or later; this host has systemd 257"
	refused managed "managed.toml:3: [Exec] PrivateUsers = \"managed\" needs systemd 258 or later; this host has systemd 257"
	refused PrivateUsersDelegate "managed.toml:4: [Exec] PrivateUsersDelegate needs systemd 260 or later; this host has systemd 257"
	for m in netns restricted managed; do check $m-not-generated test ! -e /run/systemd/nspawn/$m.nspawn; done
fi
`
	testbed.Boot(t, testbed.Scenario{
		Name:   "nspawn-keys",
		Files:  files,
		Script: script,
		Prepare: func(root string) error {
			for _, m := range []string{"plain", "netns", "restricted", "managed", "hostnet"} {
				if err := testbed.BusyboxMachine(root, m); err != nil {
					return err
				}
			}
			return nil
		},
		Check: func(t *testing.T, res *testbed.Result) { t.Logf("output:\n%s", res.Output) },
	})
}
