package nvml

import (
	"errors"
	"fmt"
	"strings"
)

// Process is a process NVML reports on a GPU. PID is a pid in the host's
// pid namespace, whatever namespace the agent runs in.
type Process struct {
	PID uint32
	// UsedBytes is the GPU memory the process holds; HasUsed is false
	// where the driver does not report it (some MIG and Windows setups).
	UsedBytes uint64
	HasUsed   bool
	// GPUInstanceID is the MIG GPU instance the process runs in (-1: no
	// MIG, or not reported).
	GPUInstanceID int
}

// MIGDevice is one MIG device of a GPU: its GPU instance, profile and
// memory.
type MIGDevice struct {
	GPUInstanceID int
	UUID          string
	// Profile is the instance's profile as the device name gives it
	// ("1g.10gb"), "" when the name does not say.
	Profile string
	Memory  Memory
}

// MIGProfile returns the profile part of a MIG device's name: "NVIDIA
// H100 80GB HBM3 MIG 1g.10gb" gives "1g.10gb"; a name without " MIG "
// gives "".
func MIGProfile(name string) string {
	i := strings.LastIndex(name, " MIG ")
	if i < 0 {
		return ""
	}
	return strings.TrimSpace(name[i+len(" MIG "):])
}

// XIDEvent is one critical XID error NVML reported.
type XIDEvent struct {
	// UUID is the GPU's UUID ("" when the event names no device).
	UUID string
	XID  uint64
}

// EventSet is an NVML event set registered for critical XID errors.
// Implementations need not be safe for concurrent use (Client serialises).
type EventSet interface {
	// RegisterXID adds the device's critical XID errors to the set; a
	// device that does not report them gives an error matching
	// ErrNotSupported.
	RegisterXID(d Device) error
	// Wait returns the next event, waiting at most timeoutMS
	// milliseconds; when none came it returns an error matching ErrTimeout.
	Wait(timeoutMS uint32) (XIDEvent, error)
	// Free releases the set.
	Free() error
}

// ErrTimeout: no event came within the wait.
var ErrTimeout = errors.New("timed out")

// codeTimeout is NVML_ERROR_TIMEOUT.
const codeTimeout = 10

// maxEventsPerDrain bounds the events one drain reads, so a GPU that
// floods events cannot hold the client.
const maxEventsPerDrain = 1024

// XIDs returns the critical XID errors NVML queued since the last call,
// without waiting. The first call registers every GPU that supports XID
// events; Registered tells how many did (0: no XIDs can be seen here). It
// returns the error of a failed drain; events read before it are returned.
func (c *Client) XIDs() (events []XIDEvent, registered int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, 0, ErrClosed
	}
	if !c.eventsTried {
		c.eventsTried = true
		if err := c.registerXIDs(); err != nil {
			return nil, 0, err
		}
	}
	if c.events == nil {
		return nil, 0, nil
	}
	for range maxEventsPerDrain {
		ev, err := c.events.Wait(0)
		if err != nil {
			if errors.Is(err, ErrTimeout) {
				return events, c.registered, nil
			}
			return events, c.registered, fmt.Errorf("nvml: XID events: %w", err)
		}
		events = append(events, ev)
	}
	return events, c.registered, nil
}

// registerXIDs creates the event set and registers every GPU that takes
// critical XID events. Must be called with c.mu held.
func (c *Client) registerXIDs() error {
	set, err := c.lib.NewEventSet()
	if err != nil {
		if errors.Is(err, ErrNotSupported) {
			return nil
		}
		return fmt.Errorf("nvml: event set: %w", err)
	}
	n, err := c.lib.DeviceCount()
	if err != nil {
		return errors.Join(fmt.Errorf("nvml: device count: %w", err), set.Free())
	}
	var errs []error
	for i := range n {
		d, err := c.lib.Device(i)
		if err != nil {
			errs = append(errs, fmt.Errorf("GPU %d: handle: %w", i, err))
			continue
		}
		switch err := set.RegisterXID(d); {
		case err == nil:
			c.registered++
		case !errors.Is(err, ErrNotSupported):
			errs = append(errs, fmt.Errorf("GPU %d: register XID events: %w", i, err))
		}
	}
	if c.registered == 0 {
		return errors.Join(append(errs, set.Free())...)
	}
	c.events = set
	if len(errs) > 0 {
		return fmt.Errorf("nvml: %w", errors.Join(errs...))
	}
	return nil
}
