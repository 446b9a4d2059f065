package machine

import (
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"
)

// Machined asks systemd-machined over the system bus.
type Machined struct{}

func (Machined) obj() (*dbus.Conn, dbus.BusObject, error) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, nil, err
	}
	return conn, conn.Object("org.freedesktop.machine1", "/org/freedesktop/machine1"), nil
}

// Running lists the registered machines (machinectl list).
func (md Machined) Running() (map[string]bool, error) {
	conn, obj, err := md.obj()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var list []struct {
		Name, Class, Service string
		Path                 dbus.ObjectPath
	}
	if err := obj.Call("org.freedesktop.machine1.Manager.ListMachines", 0).Store(&list); err != nil {
		return nil, fmt.Errorf("machined: %w", err)
	}
	out := map[string]bool{}
	for _, m := range list {
		out[m.Name] = true
	}
	return out, nil
}

// Terminate stops machine name (machinectl terminate) and waits until
// machined no longer lists it.
func (md Machined) Terminate(name string) error {
	conn, obj, err := md.obj()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := obj.Call("org.freedesktop.machine1.Manager.TerminateMachine", 0, name).Err; err != nil {
		return fmt.Errorf("machined: %w", err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r, err := md.Running(); err == nil && !r[name] {
			return nil
		}
	}
	return fmt.Errorf("machine %s still runs 30 s after TerminateMachine", name)
}
