// Package podresources asks the kubelet which pod and container each GPU is
// allocated to, through its pod-resources API (gRPC on a Unix socket,
// read-only; the List call of k8s.io/kubelet/pkg/apis/podresources/v1).
//
// The client is small on purpose: the four messages List returns are
// decoded here with protowire (wire.go) instead of importing the kubelet's
// module and its dependency tree. Device ids are normalised (device.go):
// GPU UUIDs, indexes, time-sliced ids ("<id>::<n>"), MIG ids and DRA
// claims' CDI devices.
package podresources
