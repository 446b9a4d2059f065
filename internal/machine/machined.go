package machine

import (
	"fmt"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/machine1"
)

// Machined asks systemd-machined over one system bus connection, made on
// first use and made again if the bus dropped it.
type Machined struct {
	mu   sync.Mutex
	conn *machine1.Conn
}

func (md *Machined) bus() (*machine1.Conn, error) {
	md.mu.Lock()
	defer md.mu.Unlock()
	if md.conn != nil && md.conn.Connected() {
		return md.conn, nil
	}
	conn, err := machine1.New()
	if err != nil {
		return nil, fmt.Errorf("machined: %w", err)
	}
	md.conn = conn
	return conn, nil
}

// Running lists the registered machines (machinectl list).
func (md *Machined) Running() (map[string]bool, error) {
	conn, err := md.bus()
	if err != nil {
		return nil, err
	}
	list, err := conn.ListMachines()
	if err != nil {
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
func (md *Machined) Terminate(name string) error {
	conn, err := md.bus()
	if err != nil {
		return err
	}
	if err := conn.TerminateMachine(name); err != nil {
		return fmt.Errorf("machined: %w", err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r, err := md.Running(); err == nil && !r[name] {
			return nil
		}
	}
	return fmt.Errorf("machine %s still runs 30 s after TerminateMachine", name)
}
