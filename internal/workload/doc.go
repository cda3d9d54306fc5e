// Package workload tells which Kubernetes pod and container a process
// runs in, from its cgroup (/proc/PID/cgroup): a pure parser, so that the
// consumer socket can name its peers' pods without importing anything
// heavier.
package workload
