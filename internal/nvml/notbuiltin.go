package nvml

// notBuiltIn is the Library of a build without NVML: Init reports
// ErrNotBuiltIn, and nothing else is ever called on it (Open gates).
type notBuiltIn struct{}

func (notBuiltIn) Init() error                         { return ErrNotBuiltIn }
func (notBuiltIn) Shutdown() error                     { return ErrNotBuiltIn }
func (notBuiltIn) DriverVersion() (string, error)      { return "", ErrNotBuiltIn }
func (notBuiltIn) DeviceCount() (int, error)           { return 0, ErrNotBuiltIn }
func (notBuiltIn) Device(int) (Device, error)          { return nil, ErrNotBuiltIn }
func (notBuiltIn) DeviceByUUID(string) (Device, error) { return nil, ErrNotBuiltIn }
func (notBuiltIn) NewEventSet() (EventSet, error)      { return nil, ErrNotBuiltIn }

var _ Library = notBuiltIn{}
