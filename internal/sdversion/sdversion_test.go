package sdversion

import (
	"os/exec"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want int
	}{
		{"systemd 257 (257.13-1~deb13u1)\n+PAM +AUDIT\n", 257},
		{"systemd 262 (262-1)\n", 262},
		{"systemd 252\n", 252},
	} {
		if v, err := Parse([]byte(tc.out)); err != nil || v != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.out, v, err, tc.want)
		}
	}
	for _, bad := range []string{"", "\n", "systemd\n", "systemd x (x)\n", "udev 257\n", "systemd -1\n"} {
		if v, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", bad, v)
		}
	}
}

// The probe reads what this host's systemd-nspawn says; systemctl (same
// package set) must agree on the release.
func TestInstalled(t *testing.T) {
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Skip("no systemd-nspawn here")
	}
	v, err := Installed()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemctl", "--version").Output()
	if err != nil {
		t.Skip("no systemctl here")
	}
	want, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if v != want {
		t.Errorf("Installed() = %d, systemctl --version says %d", v, want)
	}
}
