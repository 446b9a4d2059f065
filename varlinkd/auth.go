package varlinkd

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

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
// else, on one bus connection shared by all calls. Without a bus or
// polkit, non-root callers are refused.
type Polkit struct {
	mu   sync.Mutex
	conn *dbus.Conn
}

// polkitResult is CheckAuthorization's one (bba{ss}) reply.
type polkitResult struct {
	IsAuthorized, IsChallenge bool
	Details                   map[string]string
}

func (p *Polkit) bus() (*dbus.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil && p.conn.Connected() {
		return p.conn, nil
	}
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, fmt.Errorf("polkit: %w", err)
	}
	p.conn = conn
	return conn, nil
}

// Allowed implements Authorizer.
func (p *Polkit) Allowed(c Caller, action string, interactive bool) (bool, error) {
	if !c.known {
		return false, nil
	}
	if c.UID == 0 {
		return true, nil
	}
	conn, err := p.bus()
	if err != nil {
		return false, err
	}
	var flags uint32
	if interactive {
		flags = 1 // AllowUserInteraction
	}
	authority := conn.Object("org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority")
	check := func(details map[string]dbus.Variant) (polkitResult, error) {
		subject := struct {
			Kind    string
			Details map[string]dbus.Variant
		}{"unix-process", details}
		var r polkitResult
		err := authority.Call("org.freedesktop.PolicyKit1.Authority.CheckAuthorization", 0,
			subject, action, map[string]string{}, flags, "").Store(&r)
		return r, err
	}
	// A pidfd names the process without a reuse race; polkit takes one
	// since version 124. Older ones fail the call, and get PID and start
	// time, read when the caller connected.
	var r polkitResult
	err = errNoPIDFD
	if c.PIDFD >= 0 {
		r, err = check(map[string]dbus.Variant{
			"pidfd": dbus.MakeVariant(dbus.UnixFD(c.PIDFD)),
			"uid":   dbus.MakeVariant(int32(c.UID)),
		})
	}
	if err != nil {
		r, err = check(map[string]dbus.Variant{
			"pid":        dbus.MakeVariant(uint32(c.PID)),
			"start-time": dbus.MakeVariant(c.StartTime),
			"uid":        dbus.MakeVariant(int32(c.UID)),
		})
	}
	if err != nil {
		return false, fmt.Errorf("polkit: %w", err)
	}
	return r.IsAuthorized, nil
}

var errNoPIDFD = errors.New("no pidfd")

// allowed asks s.Auth about the caller of c. A refusal is logged once,
// with uid and action; an error from polkit counts as a refusal.
func (s *Server) allowed(c *varlink.Call, action string, interactive *bool) bool {
	who := caller(c)
	ok, err := s.Auth.Allowed(who, action, interactive != nil && *interactive)
	switch {
	case err != nil:
		s.Log.Warningf("denied %s to uid %d (pid %d): %v", action, who.UID, who.PID, err)
	case !ok:
		s.Log.Noticef("denied %s to uid %d (pid %d)", action, who.UID, who.PID)
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
