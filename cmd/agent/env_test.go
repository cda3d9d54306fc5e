package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSetCUDADeviceOrder(t *testing.T) {
	for _, tc := range []struct {
		name, before, after, logs string
	}{
		{"unset", "", "PCI_BUS_ID", "CUDA_DEVICE_ORDER was unset: set to PCI_BUS_ID"},
		{"already PCI_BUS_ID", "PCI_BUS_ID", "PCI_BUS_ID", ""},
		{"operator's choice kept", "FASTEST_FIRST", "FASTEST_FIRST", "is not PCI_BUS_ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			if tc.before != "" {
				env[envCUDADeviceOrder] = tc.before
			}
			var buf bytes.Buffer
			log, _ := newLogger(&buf, "info", "logfmt")
			setenv := func(k, v string) error { env[k] = v; return nil }
			if err := setCUDADeviceOrder(func(k string) string { return env[k] }, setenv, log); err != nil {
				t.Fatal(err)
			}
			if env[envCUDADeviceOrder] != tc.after {
				t.Errorf("CUDA_DEVICE_ORDER = %q, want %q", env[envCUDADeviceOrder], tc.after)
			}
			if tc.logs == "" && buf.Len() > 0 || !strings.Contains(buf.String(), tc.logs) {
				t.Errorf("log %q, want %q", buf.String(), tc.logs)
			}
		})
	}
}
