package podresources

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Pod is a pod with the devices its containers were allocated.
type Pod struct {
	Namespace, Name string
	Containers      []Container
}

// Container is one container's devices: device-plugin devices and DRA
// claims.
type Container struct {
	Name    string
	Devices []Devices
	Claims  []Claim
}

// Devices are the ids a device plugin allocated for one resource
// ("nvidia.com/gpu", "nvidia.com/mig-1g.10gb").
type Devices struct {
	Resource string
	IDs      []string
}

// Claim is a DRA resource claim's devices.
type Claim struct {
	Name, Namespace string
	Resources       []ClaimResource
}

// ClaimResource is one device of a claim: the driver's pool and device
// names and its CDI device names ("nvidia.com/gpu=gpu-0").
type ClaimResource struct {
	Driver, Pool, Device string
	CDIDevices           []string
}

// Field numbers of podresources/v1 api.proto.
const (
	fListPodResources = 1 // ListPodResourcesResponse.pod_resources

	fPodName, fPodNamespace, fPodContainers = 1, 2, 3

	fContainerName, fContainerDevices, fContainerDynamic = 1, 2, 5

	fDevicesResource, fDevicesIDs = 1, 2

	fClaimName, fClaimNamespace, fClaimResources = 2, 3, 4

	fResourceCDI, fResourceDriver, fResourcePool, fResourceDevice = 1, 2, 3, 4

	fCDIName = 1
)

// maxRepeated bounds every repeated field, so a hostile or broken peer
// cannot make the agent build unbounded lists.
const maxRepeated = 1 << 16

var errTooMany = errors.New("too many entries")

// fields calls fn for each field of a message; fn sees the field number,
// its wire type and, for length-delimited fields, the bytes.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v); err != nil {
			return err
		}
	}
	return nil
}

// decodeList decodes a ListPodResourcesResponse.
func decodeList(b []byte) ([]Pod, error) {
	var pods []Pod
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != fListPodResources || typ != protowire.BytesType {
			return nil
		}
		if len(pods) >= maxRepeated {
			return errTooMany
		}
		p, err := decodePod(v)
		if err != nil {
			return fmt.Errorf("pod %d: %w", len(pods), err)
		}
		pods = append(pods, p)
		return nil
	})
	return pods, err
}

func decodePod(b []byte) (Pod, error) {
	var p Pod
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fPodName:
			p.Name = string(v)
		case fPodNamespace:
			p.Namespace = string(v)
		case fPodContainers:
			if len(p.Containers) >= maxRepeated {
				return errTooMany
			}
			c, err := decodeContainer(v)
			if err != nil {
				return err
			}
			p.Containers = append(p.Containers, c)
		}
		return nil
	})
	return p, err
}

func decodeContainer(b []byte) (Container, error) {
	var c Container
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fContainerName:
			c.Name = string(v)
		case fContainerDevices:
			if len(c.Devices) >= maxRepeated {
				return errTooMany
			}
			var d Devices
			err := fields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				switch {
				case typ != protowire.BytesType:
				case num == fDevicesResource:
					d.Resource = string(v)
				case num == fDevicesIDs:
					if len(d.IDs) >= maxRepeated {
						return errTooMany
					}
					d.IDs = append(d.IDs, string(v))
				}
				return nil
			})
			if err != nil {
				return err
			}
			c.Devices = append(c.Devices, d)
		case fContainerDynamic:
			if len(c.Claims) >= maxRepeated {
				return errTooMany
			}
			cl, err := decodeClaim(v)
			if err != nil {
				return err
			}
			c.Claims = append(c.Claims, cl)
		}
		return nil
	})
	return c, err
}

func decodeClaim(b []byte) (Claim, error) {
	var cl Claim
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fClaimName:
			cl.Name = string(v)
		case fClaimNamespace:
			cl.Namespace = string(v)
		case fClaimResources:
			if len(cl.Resources) >= maxRepeated {
				return errTooMany
			}
			var r ClaimResource
			err := fields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if typ != protowire.BytesType {
					return nil
				}
				switch num {
				case fResourceDriver:
					r.Driver = string(v)
				case fResourcePool:
					r.Pool = string(v)
				case fResourceDevice:
					r.Device = string(v)
				case fResourceCDI:
					if len(r.CDIDevices) >= maxRepeated {
						return errTooMany
					}
					return fields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
						if num == fCDIName && typ == protowire.BytesType {
							r.CDIDevices = append(r.CDIDevices, string(v))
						}
						return nil
					})
				}
				return nil
			})
			if err != nil {
				return err
			}
			cl.Resources = append(cl.Resources, r)
		}
		return nil
	})
	return cl, err
}

// EncodeList encodes pods as a ListPodResourcesResponse (for fake
// kubelets in tests, and the decoder's round-trip test).
func EncodeList(pods []Pod) []byte {
	var b []byte
	for _, p := range pods {
		b = appendMessage(b, fListPodResources, encodePod(p))
	}
	return b
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendMessage(b []byte, num protowire.Number, m []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

func encodePod(p Pod) []byte {
	b := appendString(nil, fPodName, p.Name)
	b = appendString(b, fPodNamespace, p.Namespace)
	for _, c := range p.Containers {
		cb := appendString(nil, fContainerName, c.Name)
		for _, d := range c.Devices {
			db := appendString(nil, fDevicesResource, d.Resource)
			for _, id := range d.IDs {
				db = appendString(db, fDevicesIDs, id)
			}
			cb = appendMessage(cb, fContainerDevices, db)
		}
		for _, cl := range c.Claims {
			clb := appendString(nil, fClaimName, cl.Name)
			clb = appendString(clb, fClaimNamespace, cl.Namespace)
			for _, r := range cl.Resources {
				var rb []byte
				for _, n := range r.CDIDevices {
					rb = appendMessage(rb, fResourceCDI, appendString(nil, fCDIName, n))
				}
				rb = appendString(rb, fResourceDriver, r.Driver)
				rb = appendString(rb, fResourcePool, r.Pool)
				rb = appendString(rb, fResourceDevice, r.Device)
				clb = appendMessage(clb, fClaimResources, rb)
			}
			cb = appendMessage(cb, fContainerDynamic, clb)
		}
		b = appendMessage(b, fPodContainers, cb)
	}
	return b
}
