package conf

import (
	"errors"
	"fmt"
)

// hostNameMax is Linux's HOST_NAME_MAX, the limit machined applies.
const hostNameMax = 64

// ValidateMachineName accepts exactly what systemd-machined accepts as a
// machine name (hostname_is_valid() in systemd): dot-separated labels of
// letters, digits and inner hyphens, at most 64 characters. The name becomes
// the instance of systemd-nspawn@.service unescaped, as machinectl does it,
// which is safe because these characters need no unit-name escaping.
func ValidateMachineName(name string) error {
	if err := validateHostname(name); err != nil {
		return fmt.Errorf("invalid machine name %q: %w", name, err)
	}
	return nil
}

func validateHostname(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > hostNameMax:
		return fmt.Errorf("longer than %d characters", hostNameMax)
	}
	labelStart := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if labelStart || s[i-1] == '-' {
				return errors.New("empty label or label ending in '-'")
			}
			labelStart = true
		case c == '-':
			if labelStart {
				return errors.New("label starting with '-'")
			}
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			labelStart = false
		default:
			return fmt.Errorf("character %q not allowed (letters, digits, '-' and '.' only)", rune(c))
		}
	}
	if labelStart || s[len(s)-1] == '-' {
		return errors.New("ends with '.' or '-'")
	}
	return nil
}
