package varlinkd

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/godbus/dbus/v5"
	"github.com/varlink/go/varlink"
)

// Polkit actions; see units/io.berth.policy.
const (
	ActionManageTemplates = "io.berth.manage-templates"
)

// Authorizer decides whether a caller may perform an action.
type Authorizer interface {
	Allowed(c Caller, action string, interactive bool) (bool, error)
}

// Polkit allows root, and asks polkit over the system bus about everyone
// else. Without a bus or polkit, non-root callers are refused.
type Polkit struct{}

// Allowed implements Authorizer.
func (Polkit) Allowed(c Caller, action string, interactive bool) (bool, error) {
	if !c.known {
		return false, nil
	}
	if c.UID == 0 {
		return true, nil
	}
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return false, fmt.Errorf("polkit: %w", err)
	}
	defer conn.Close()
	start, err := processStartTime(c.PID)
	if err != nil {
		return false, err
	}
	subject := struct {
		Kind    string
		Details map[string]dbus.Variant
	}{"unix-process", map[string]dbus.Variant{
		"pid":        dbus.MakeVariant(uint32(c.PID)),
		"start-time": dbus.MakeVariant(start),
		"uid":        dbus.MakeVariant(int32(c.UID)),
	}}
	var flags uint32
	if interactive {
		flags = 1 // AllowUserInteraction
	}
	var result struct {
		IsAuthorized, IsChallenge bool
		Details                   map[string]string
	}
	authority := conn.Object("org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority")
	err = authority.Call("org.freedesktop.PolicyKit1.Authority.CheckAuthorization", 0,
		subject, action, map[string]string{}, flags, "").Store(&result.IsAuthorized, &result.IsChallenge, &result.Details)
	if err != nil {
		return false, fmt.Errorf("polkit: %w", err)
	}
	return result.IsAuthorized, nil
}

// allowed asks s.Auth about the caller of c; an error from polkit is
// logged and counts as a refusal.
func (s *Server) allowed(c *varlink.Call, action string, interactive *bool) bool {
	ok, err := s.Auth.Allowed(caller(c), action, interactive != nil && *interactive)
	if err != nil {
		s.Log.Warningf("authorization of %s: %v", action, err)
	}
	return ok
}

// processStartTime is field 22 of /proc/PID/stat, which polkit pairs with
// the PID to name a process without a reuse race.
func processStartTime(pid int32) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}
