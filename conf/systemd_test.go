package conf

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func machine(t *testing.T, src string) (*Machine, error) {
	t.Helper()
	f, err := Parse("m.toml", []byte(src))
	if err != nil {
		return nil, err
	}
	return Merge("m", []*File{f})
}

// Values of the keys systemd 258-262 added, and of PrivateUsers=, are
// checked as systemd-nspawn parses them.
func TestNewKeyValues(t *testing.T) {
	for _, tc := range []struct{ src, err string }{
		{"[Exec]\nPrivateUsers = true\n", ""},
		{"[Exec]\nPrivateUsers = \"pick\"\n", ""},
		{"[Exec]\nPrivateUsers = \"identity\"\n", ""},
		{"[Exec]\nPrivateUsers = \"1879048192:65536\"\n", ""},
		{"[Exec]\nPrivateUsers = \"1879048192\"\n", ""},
		{"[Exec]\nPrivateUsers = \"pik\"\n", `m.toml:2: [Exec] PrivateUsers: "pik" is not a boolean, "pick", "identity", "managed", "UID" or "UID:COUNT"`},
		{"[Exec]\nPrivateUsers = \"65536:\"\n", `"65536:" is not a boolean`},
		{"[Exec]\nPrivateUsers = \"managed\"\nPrivateUsersDelegate = 16\n", ""},
		{"[Exec]\nPrivateUsers = \"managed\"\nPrivateUsersDelegate = \"2\"\n", ""},
		{"[Exec]\nPrivateUsers = \"managed\"\nPrivateUsersDelegate = 17\n", `m.toml:3: [Exec] PrivateUsersDelegate: "17" is not a number of ranges from 0 to 16`},
		{"[Exec]\nPrivateUsers = \"managed\"\nPrivateUsersDelegate = -1\n", `"-1" is not a number of ranges`},
		{"[Exec]\nRestrictAddressFamilies = [\"AF_INET AF_INET6\", \"AF_UNIX\"]\n", ""},
		{"[Exec]\nRestrictAddressFamilies = [\"~AF_PACKET AF_NETLINK\"]\n", ""},
		{"[Exec]\nRestrictAddressFamilies = [\"none\"]\n", ""},
		{"[Exec]\nRestrictAddressFamilies = [\"AF_INET\", \"inet6\"]\n", `m.toml:2: [Exec] RestrictAddressFamilies: element 2: "inet6" is not an address family name such as AF_INET`},
		{"[Exec]\nRestrictAddressFamilies = [\"~\"]\n", `"~" names no address family`},
		{"[Files]\nBindUser = [\"alice\"]\nBindUserShell = true\n", ""},
		{"[Files]\nBindUser = [\"alice\"]\nBindUserShell = \"/bin/sh\"\n", ""},
		{"[Files]\nBindUser = [\"alice\"]\nBindUserShell = \"sh\"\n", `m.toml:3: [Files] BindUserShell: "sh" is neither a boolean nor an absolute path`},
		{"[Network]\nNamespacePath = \"/run/netns/foo\"\n", ""},
		{"[Network]\nNamespacePath = \"netns/foo\"\n", `m.toml:2: [Network] NamespacePath: "netns/foo" is not an absolute path`},
	} {
		_, err := machine(t, tc.src)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: err = %v, want %q", tc.src, err, tc.err)
		}
	}
}

// systemd-nspawn's own rules for user and network namespaces, as they
// play out under systemd-nspawn@.service (which passes --network-veth).
func TestNamespaceRules(t *testing.T) {
	for _, tc := range []struct{ name, src, err string }{
		{"managed with the unit's veth", "[Exec]\nPrivateUsers = \"managed\"\n", ""},
		{"managed with Private", "[Exec]\nPrivateUsers = \"managed\"\n[Network]\nPrivate = true\n", ""},
		{"managed with a bridge", "[Exec]\nPrivateUsers = \"managed\"\n[Network]\nBridge = \"br0\"\n", ""},
		{"managed with a zone", "[Exec]\nPrivateUsers = \"managed\"\n[Network]\nZone = \"web\"\n", ""},
		{"managed with an interface", "[Exec]\nPrivateUsers = \"managed\"\n[Network]\nVirtualEthernet = false\nInterface = [\"eth1\"]\n", ""},
		{"managed, network off", "[Exec]\nPrivateUsers = \"managed\"\n[Network]\nVirtualEthernet = false\n",
			`m.toml:2: [Exec] PrivateUsers = "managed" needs private networking, which the [Network] settings here turn off`},
		{"managed, private off", "[Exec]\nPrivateUsers = \"managed\"\n[Network]\nPrivate = false\n", `needs private networking`},
		{"managed in a netns", "[Exec]\nPrivateUsers = \"managed\"\n[Network]\nNamespacePath = \"/run/netns/a\"\n", `needs private networking`},
		{"managed, empty interface list", "[Exec]\nPrivateUsers = \"managed\"\n[Network]\nInterface = []\n", ""},
		{"delegate without managed", "[Exec]\nPrivateUsersDelegate = 1\n", `m.toml:2: [Exec] PrivateUsersDelegate needs PrivateUsers = "managed"`},
		{"delegate 0 without managed", "[Exec]\nPrivateUsers = \"pick\"\nPrivateUsersDelegate = 0\n", ""},
		{"netns alone", "[Network]\nNamespacePath = \"/run/netns/a\"\n", ""},
		{"netns with veth", "[Network]\nVirtualEthernet = true\nNamespacePath = \"/run/netns/a\"\n",
			`m.toml:3: [Network] NamespacePath cannot be combined with other network settings: VirtualEthernet is set at m.toml:2`},
		{"netns with a port", "[Network]\nNamespacePath = \"/run/netns/a\"\nPort = [\"8080:80\"]\n", `m.toml:3: [Network] Port needs private networking`},
		{"port with the unit's veth", "[Network]\nPort = [\"8080:80\"]\n", ""},
		{"port, private off", "[Network]\nPrivate = false\nPort = [\"8080:80\"]\n", `[Network] Port needs private networking`},
		{"shell without users", "[Files]\nBindUserShell = true\n", `m.toml:2: [Files] BindUserShell needs BindUser`},
	} {
		_, err := machine(t, tc.src)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
		}
	}
}

func release(v int, calls *int) func() (int, error) {
	return func() (int, error) { *calls++; return v, nil }
}

// Each key and value systemd added after 257 is refused, naming it and the
// release that has it, by every older systemd, and accepted from that
// release on. The version is asked for only when such a key is used.
func TestCheckSystemd(t *testing.T) {
	for _, tc := range []struct {
		src   string
		since int
		what  string
	}{
		{"[Exec]\nPrivateUsers = \"managed\"\n", 258, `[Exec] PrivateUsers = "managed"`},
		{"[Files]\nPrivateUsersOwnership = \"foreign\"\n", 258, `[Files] PrivateUsersOwnership = "foreign"`},
		{"[Files]\nBindUser = [\"a\"]\nBindUserShell = true\n", 258, `[Files] BindUserShell`},
		{"[Network]\nNamespacePath = \"/run/netns/a\"\n", 259, `[Network] NamespacePath`},
		{"[Exec]\nPrivateUsers = \"managed\"\nPrivateUsersDelegate = 1\n", 260, `[Exec] PrivateUsersDelegate`},
		{"[Exec]\nRestrictAddressFamilies = [\"AF_INET\"]\n", 261, `[Exec] RestrictAddressFamilies`},
	} {
		m, err := machine(t, tc.src)
		if err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		var calls int
		err = m.CheckSystemd(release(tc.since-1, &calls))
		want := tc.what + " needs systemd " + itoa(tc.since) + " or later; this host has systemd " + itoa(tc.since-1)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "m.toml:") {
			t.Errorf("%q on %d: err = %v, want %q", tc.src, tc.since-1, err, want)
		}
		if err := m.CheckSystemd(release(tc.since, &calls)); err != nil {
			t.Errorf("%q on %d: %v", tc.src, tc.since, err)
		}
		if err := m.CheckSystemd(release(262, &calls)); err != nil {
			t.Errorf("%q on 262: %v", tc.src, err)
		}
	}
	// Keys every supported release has do not ask.
	m, err := machine(t, "[Exec]\nBoot = true\nPrivateUsers = \"pick\"\n[Files]\nPrivateUsersOwnership = \"map\"\nBindUser = [\"a\"]\n[Network]\nVirtualEthernet = true\n")
	if err != nil {
		t.Fatal(err)
	}
	var calls int
	if err := m.CheckSystemd(release(257, &calls)); err != nil || calls != 0 {
		t.Errorf("257 keys: err = %v, version asked %d times", err, calls)
	}
	// Not knowing the version refuses, saying why.
	m, _ = machine(t, "[Network]\nNamespacePath = \"/run/netns/a\"\n")
	err = m.CheckSystemd(func() (int, error) { return 0, errors.New("no systemd-nspawn") })
	if err == nil || !strings.Contains(err.Error(), "m.toml:2: [Network] NamespacePath needs systemd 259 or later, and this host's version is unknown: no systemd-nspawn") {
		t.Errorf("unknown version: %v", err)
	}
}

// The loader applies the check to the merged machine: a drop-in's key is
// reported at the drop-in, and only that machine fails.
func TestLoaderChecksSystemd(t *testing.T) {
	var calls int
	l := &Loader{Root: tree(t, map[string]string{
		"/etc/berth/machines/old.toml":            "[Exec]\nBoot = true\n",
		"/etc/berth/machines/old.toml.d/net.toml": "[Network]\nNamespacePath = \"/run/netns/a\"\n",
		"/etc/berth/machines/ok.toml":             "[Exec]\nBoot = true\n",
	}), Systemd: release(257, &calls)}
	res := l.LoadAll()
	if len(res) != 2 || res[0].Err != nil || res[1].Err == nil ||
		res[1].Err.Error() != "/etc/berth/machines/old.toml.d/net.toml:2: [Network] NamespacePath needs systemd 259 or later; this host has systemd 257" {
		t.Fatalf("results: %+v", res)
	}
	l.Systemd = release(259, &calls)
	if res := l.LoadAll(); res[1].Err != nil {
		t.Errorf("on 259: %v", res[1].Err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
