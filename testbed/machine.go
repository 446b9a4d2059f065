package testbed

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// busyboxApplets are linked in every test machine.
var busyboxApplets = []string{"sh", "sleep", "cat", "env", "printf", "echo", "ls", "id", "hostname", "touch", "httpd", "wget"}

// BusyboxMachine makes a 1 MB machine tree /var/lib/machines/NAME below
// root, from the testbed's own busybox-static: enough for systemd-nspawn,
// which wants an os-release file.
func BusyboxMachine(root, name string) error {
	d := filepath.Join(root, "var/lib/machines", name)
	for _, sub := range []string{"bin", "usr/lib", "etc", "tmp", "proc", "sys", "dev", "run", "var"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(filepath.Join(root, "usr/bin/busybox"), filepath.Join(d, "bin/busybox"), 0o755); err != nil {
		return fmt.Errorf("busybox machine %s: %w", name, err)
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(d, "bin", a)); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(d, "usr/lib/os-release"), []byte("ID=busybox\nNAME=busybox\n"), 0o644)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
