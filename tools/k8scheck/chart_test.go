package k8scheck

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/vramseal/vramseal/alerts"
	"github.com/vramseal/vramseal/dashboards"
	"github.com/vramseal/vramseal/internal/config"
)

const fullname = release + "-vramseal"

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	out := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		out[e.Name] = e
	}
	return out
}

func fieldRef(e corev1.EnvVar) string {
	if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
		return ""
	}
	return e.ValueFrom.FieldRef.FieldPath
}

func volumeOf(spec corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

func mountsOf(c corev1.Container) map[string]corev1.VolumeMount {
	out := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		out[m.Name] = m
	}
	return out
}

// checkDaemonSet asserts what every value set must keep: the agent's
// environment, probes, security context and mounts, consistent with the
// configuration cfg the chart rendered.
func checkDaemonSet(t *testing.T, r rendered, cfg *config.Config) {
	t.Helper()
	ds := r.get(t, "DaemonSet", fullname).(*appsv1.DaemonSet)
	spec := ds.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("the pod template lacks selector label %s=%s", k, v)
		}
	}
	env := envOf(c)
	for name, path := range map[string]string{"NODE_NAME": "spec.nodeName", "POD_UID": "metadata.uid", "POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
		if got := fieldRef(env[name]); got != path {
			t.Errorf("env %s from %q, want the downward API's %s", name, got, path)
		}
	}
	if env["CUDA_DEVICE_ORDER"].Value != "PCI_BUS_ID" {
		t.Errorf("CUDA_DEVICE_ORDER = %q, want PCI_BUS_ID", env["CUDA_DEVICE_ORDER"].Value)
	}
	if env["OTEL_SERVICE_NAME"].Value == "" || env["OTEL_EXPORTER_OTLP_PROTOCOL"].Value == "" {
		t.Errorf("OTEL_* not set: %v", env)
	}
	// Never a device-plugin GPU request: that takes GPUs from the engines.
	for _, rl := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
		for name := range rl {
			if strings.Contains(string(name), "gpu") {
				t.Errorf("resources ask for %s", name)
			}
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources: %+v", c.Resources)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" {
		t.Errorf("ports: %+v", c.Ports)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		switch {
		case p == nil:
			t.Errorf("no %s probe", name)
		case p.HTTPGet != nil:
			want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[name]
			if p.HTTPGet.Path != want || p.HTTPGet.Port.String() != "metrics" {
				t.Errorf("%s probe: GET %s on %s, want %s on metrics", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), want)
			}
		case p.Exec != nil:
			if p.Exec.Command[0] != "/usr/local/bin/vramseal-agent" || p.Exec.Command[1] != "status" {
				t.Errorf("%s probe runs %v", name, p.Exec.Command)
			}
		default:
			t.Errorf("%s probe: %+v", name, p)
		}
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("the root filesystem is writable: %+v", sc)
	} else if sc.Privileged == nil || !*sc.Privileged {
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("securityContext too loose: %+v", sc)
		}
	}
	if spec.SecurityContext == nil || spec.SecurityContext.SeccompProfile == nil || spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccomp profile: %+v", spec.SecurityContext)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the service account token is mounted (the agent calls no Kubernetes API)")
	}

	// The configuration as a directory on /etc/vramseal (the default
	// --config.file), never a subPath: the kubelet must be able to update it.
	mounts := mountsOf(c)
	if m := mounts["config"]; m.MountPath != "/etc/vramseal" || m.SubPath != "" || !m.ReadOnly {
		t.Errorf("config mount %+v, want the directory /etc/vramseal, read-only, no subPath", m)
	}
	if v := volumeOf(spec, "config"); v == nil || v.ConfigMap == nil || v.ConfigMap.Name != fullname+"-config" {
		t.Errorf("config volume %+v", v)
	}
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--config.file") {
			t.Errorf("args name the config file (%s): the default /etc/vramseal/config.yml is the one path", a)
		}
	}
	if !slices.Contains(c.Args, "run") || !slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--config.auto-reload-interval=") }) {
		t.Errorf("args %v", c.Args)
	}
	// The seal secret, 0400, where seal_secret_file points.
	if m := mounts["seal-secret"]; m.MountPath != filepath.Dir(cfg.SealSecretFile) || !m.ReadOnly {
		t.Errorf("secret mounted at %s, but seal_secret_file is %s", m.MountPath, cfg.SealSecretFile)
	}
	if v := volumeOf(spec, "seal-secret"); v == nil || v.Secret == nil || v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o400 {
		t.Errorf("secret volume %+v, want defaultMode 0400", v)
	}
	// The spool where audit.spool_dir points, from the host.
	if m := mounts["spool"]; m.MountPath != cfg.Audit.SpoolDir {
		t.Errorf("spool mounted at %s, audit.spool_dir is %s", m.MountPath, cfg.Audit.SpoolDir)
	}
	if v := volumeOf(spec, "spool"); v == nil || v.HostPath == nil {
		t.Errorf("spool volume %+v, want a hostPath", v)
	}
	// Sockets on a hostPath; the consumer socket (when on) among them.
	if m := mounts["sockets"]; m.MountPath != "/run/vramseal" || !slices.Contains(c.Args, "--control.socket=/run/vramseal/agent.sock") {
		t.Errorf("sockets mounted at %s, args %v", m.MountPath, c.Args)
	}
	if cfg.Handoff.Socket != "" && filepath.Dir(cfg.Handoff.Socket) != "/run/vramseal" {
		t.Errorf("handoff.socket %s is not in the shared socket folder", cfg.Handoff.Socket)
	}
	for _, d := range cfg.ModelDirs {
		var found bool
		for _, m := range c.VolumeMounts {
			found = found || d == m.MountPath || strings.HasPrefix(d, m.MountPath+"/")
		}
		if !found {
			t.Errorf("model_dirs entry %s is not mounted", d)
		}
	}
}

func TestDefaults(t *testing.T) {
	r := render(t, helm(t), "")
	want := []string{"ConfigMap/" + fullname + "-config", "DaemonSet/" + fullname, "Pod/" + fullname + "-test",
		"Secret/" + fullname + "-seal-secret", "Service/" + fullname, "ServiceAccount/" + fullname}
	if got := r.names(); !slices.Equal(got, want) {
		t.Fatalf("defaults render %v, want %v (monitoring objects are opt-in)", got, want)
	}
	ds := r.get(t, "DaemonSet", fullname).(*appsv1.DaemonSet)
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	if c.Image != "ghcr.io/vramseal/vramseal-agent:0.1.0" {
		t.Errorf("image %s, want the appVersion tag", c.Image)
	}
	if spec.RuntimeClassName == nil || *spec.RuntimeClassName != "nvidia" || envOf(c)["NVIDIA_VISIBLE_DEVICES"].Value != "all" {
		t.Errorf("GPU access: runtime class %v, NVIDIA_VISIBLE_DEVICES %q", spec.RuntimeClassName, envOf(c)["NVIDIA_VISIBLE_DEVICES"].Value)
	}
	if spec.HostPID || (c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged) {
		t.Error("hostPID or privileged by default")
	}
	// No rollout on a configuration change: it would end every lease.
	if _, ok := ds.Spec.Template.Annotations["checksum/config"]; ok {
		t.Error("checksum/config is set by default")
	}
	// The consumer socket is on: engines use the sealed memory itself.
	cm := r.get(t, "ConfigMap", fullname+"-config").(*corev1.ConfigMap)
	if cfg, err := config.Parse("config.yml", []byte(cm.Data["config.yml"]), config.Env{Getenv: func(string) string { return "n" }}); err != nil || cfg.Handoff.Socket != "/run/vramseal/handoff.sock" {
		t.Errorf("the default configuration's consumer socket: %v (%v)", cfg, err)
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || spec.PriorityClassName != "system-node-critical" ||
		spec.NodeSelector["nvidia.com/gpu.present"] != "true" || len(spec.Tolerations) != 1 {
		t.Errorf("scheduling: %+v", spec)
	}
	sec := r.get(t, "Secret", fullname+"-seal-secret").(*corev1.Secret)
	if len(sec.Data["seal.key"]) < 32 || sec.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the generated seal secret: %d bytes, annotations %v", len(sec.Data["seal.key"]), sec.Annotations)
	}
	svc := r.get(t, "Service", fullname).(*corev1.Service)
	if svc.Spec.ClusterIP != "None" || svc.Spec.Ports[0].Name != "metrics" {
		t.Errorf("service %+v", svc.Spec)
	}
	if test := r.get(t, "Pod", fullname+"-test"); test.GetAnnotations()["helm.sh/hook"] != "test" {
		t.Errorf("the test pod is not a helm test hook: %v", test.GetAnnotations())
	}
}

// checkRelabelings: the scrape sets job as the rules select it and
// instance to the node, then the user's relabelings.
func checkRelabelings(t *testing.T, what string, rl []monitoringv1.RelabelConfig) {
	t.Helper()
	if len(rl) < 2 || rl[0].TargetLabel != "job" || rl[0].Replacement == nil || *rl[0].Replacement != "vramseal" ||
		rl[1].TargetLabel != "instance" || len(rl[1].SourceLabels) != 1 || rl[1].SourceLabels[0] != "__meta_kubernetes_pod_node_name" {
		t.Errorf("%s relabelings %+v", what, rl)
	}
	if !bytes.Contains(alerts.Rules, []byte(`job="vramseal"`)) {
		t.Error(`the rules no longer select job="vramseal": update the chart's vramseal.job`)
	}
}

func TestKubePrometheusStack(t *testing.T) {
	r := render(t, helm(t), filepath.Join(chart, "ci", "kube-prometheus-stack-values.yaml"))
	sm := r.get(t, "ServiceMonitor", fullname).(*monitoringv1.ServiceMonitor)
	pr := r.get(t, "PrometheusRule", fullname).(*monitoringv1.PrometheusRule)
	for what, labels := range map[string]map[string]string{"ServiceMonitor": sm.Labels, "PrometheusRule": pr.Labels} {
		if labels["release"] != "kube-prometheus-stack" {
			t.Errorf("%s labels %v lack release: kube-prometheus-stack", what, labels)
		}
	}
	ep := sm.Spec.Endpoints[0]
	checkRelabelings(t, "ServiceMonitor", ep.RelabelConfigs)
	if ep.Port != "metrics" || ep.Interval != "15s" || len(ep.RelabelConfigs) != 3 || ep.RelabelConfigs[2].TargetLabel != "cluster" {
		t.Errorf("endpoint %+v", ep)
	}
	// The rules are the source's, with the per-alert overrides.
	src, err := alerts.Load()
	if err != nil {
		t.Fatal(err)
	}
	var nSrc, nGot int
	for _, g := range src.Groups {
		nSrc += len(g.Rules)
	}
	for _, g := range pr.Spec.Groups {
		for _, rule := range g.Rules {
			nGot++
			switch rule.Alert {
			case "VramsealAuditSpoolQuarantined":
				t.Error("a disabled alert is rendered")
			case "VramsealConfigReloadFailed":
				if rule.Labels["severity"] != "critical" || rule.Labels["team"] != "gpu-platform" || rule.For == nil || *rule.For != "30m" {
					t.Errorf("override not applied: %+v", rule)
				}
			case "VramsealSealVerificationFailed":
				if rule.Labels["severity"] != "critical" || !strings.Contains(rule.Annotations["summary"], "{{ $labels.shard_id }}") {
					t.Errorf("rule changed on its way through the chart: %+v", rule)
				}
			}
		}
	}
	if nGot != nSrc-1 {
		t.Errorf("%d rules rendered, want the source's %d less the disabled one", nGot, nSrc)
	}
	// Dashboards: one ConfigMap each, for the Grafana sidecar.
	all, err := dashboards.All()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, obj := range r {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok || cm.Labels["grafana_dashboard"] == "" {
			continue
		}
		n++
		if cm.Labels["grafana_dashboard"] != "1" || cm.Annotations["grafana_folder"] != "vramseal" || cm.Namespace != "monitoring" || cm.Labels["release"] != "kube-prometheus-stack" {
			t.Errorf("dashboard %s: labels %v, annotations %v, namespace %s", cm.Name, cm.Labels, cm.Annotations, cm.Namespace)
		}
		for _, d := range all {
			if got, ok := cm.Data[d.File]; ok && got != strings.TrimSuffix(string(d.JSON), "\n") {
				t.Errorf("dashboard %s differs from dashboards/json/%s", cm.Name, d.File)
			}
		}
	}
	if n != len(all) {
		t.Errorf("%d dashboard ConfigMaps, want %d", n, len(all))
	}
}

func TestPodMonitor(t *testing.T) {
	r := render(t, helm(t), filepath.Join(chart, "ci", "podmonitor-values.yaml"))
	pm := r.get(t, "PodMonitor", fullname).(*monitoringv1.PodMonitor)
	if pm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("PodMonitor labels %v lack release: kube-prometheus-stack", pm.Labels)
	}
	checkRelabelings(t, "PodMonitor", pm.Spec.PodMetricsEndpoints[0].RelabelConfigs)
	if _, ok := r["Service/"+fullname]; ok {
		t.Error("service.enabled=false still renders the Service")
	}
	if _, ok := r["Secret/"+fullname+"-seal-secret"]; ok {
		t.Error("a seal secret is rendered beside secret.existingSecret")
	}
	spec := r.get(t, "DaemonSet", fullname).(*appsv1.DaemonSet).Spec.Template.Spec
	if v := volumeOf(spec, "seal-secret"); v.Secret.SecretName != "vramseal-seal-secret" {
		t.Errorf("secret volume uses %s", v.Secret.SecretName)
	}
	if img := spec.Containers[0].Image; !strings.HasSuffix(img, "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") {
		t.Errorf("image %s is not pinned by digest", img)
	}
}

func TestPrivilegedWithHandoff(t *testing.T) {
	r := render(t, helm(t), filepath.Join(chart, "ci", "privileged-handoff-values.yaml"))
	ds := r.get(t, "DaemonSet", fullname).(*appsv1.DaemonSet)
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	if c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged || !spec.HostPID || spec.RuntimeClassName != nil {
		t.Errorf("privileged %v, hostPID %v, runtime class %v", c.SecurityContext.Privileged, spec.HostPID, spec.RuntimeClassName)
	}
	if v := volumeOf(spec, "host-driver"); v == nil || v.HostPath.Path != "/usr/lib64" || envOf(c)["LD_LIBRARY_PATH"].Value != "/host-driver" {
		t.Errorf("driver libraries: %+v", v)
	}
	if v := volumeOf(spec, "sockets"); v.HostPath.Path != "/var/run/vramseal" {
		t.Errorf("sockets hostPath %s", v.HostPath.Path)
	}
	if ds.Spec.Template.Annotations["checksum/config"] == "" {
		t.Error("rollOnConfigChange: no checksum/config annotation")
	}
	cm := r.get(t, "ConfigMap", fullname+"-config").(*corev1.ConfigMap)
	cfg, err := config.Parse("config.yml", []byte(cm.Data["config.yml"]), config.Env{Getenv: func(string) string { return "n" }})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Handoff.Socket != "/run/vramseal/handoff.sock" || len(cfg.Shards) != 2 || cfg.Verify.Mode != "gpu" || cfg.Handoff.AllowedUIDs[0] != 1000 {
		t.Errorf("configuration: %+v", cfg)
	}
}

func TestSecureWeb(t *testing.T) {
	r := render(t, helm(t), filepath.Join(chart, "ci", "secure-web-values.yaml"))
	wc := r.get(t, "Secret", fullname+"-web-config").(*corev1.Secret)
	var web struct {
		TLS struct {
			Cert string `json:"cert_file"`
			Key  string `json:"key_file"`
		} `json:"tls_server_config"`
		Users map[string]string `json:"basic_auth_users"`
	}
	if err := yaml.UnmarshalStrict([]byte(wc.StringData["web-config.yml"]), &web); err != nil {
		t.Fatalf("web-config.yml: %v", err)
	}
	if web.TLS.Cert != "/etc/vramseal-web/tls/tls.crt" || !strings.HasPrefix(web.Users["prometheus"], "$2y$") {
		t.Errorf("web config %+v", web)
	}
	spec := r.get(t, "DaemonSet", fullname).(*appsv1.DaemonSet).Spec.Template.Spec
	c := spec.Containers[0]
	if !slices.Contains(c.Args, "--web.config.file=/etc/vramseal-web/config/web-config.yml") || mountsOf(c)["web-tls"].MountPath != "/etc/vramseal-web/tls" {
		t.Errorf("args %v, mounts %v", c.Args, mountsOf(c))
	}
	if c.ReadinessProbe.Exec == nil {
		t.Error("with basic auth the readiness probe must not be an unauthenticated GET")
	}
	env := envOf(c)
	if h := env["OTEL_EXPORTER_OTLP_HEADERS"]; h.ValueFrom == nil || h.ValueFrom.SecretKeyRef == nil || h.ValueFrom.SecretKeyRef.Name != "vramseal-otlp" {
		t.Errorf("OTLP headers %+v, want them from the Secret", h)
	}
	if env["OTEL_EXPORTER_OTLP_CERTIFICATE"].Value != "/etc/vramseal-otel-ca/ca.crt" || volumeOf(spec, "otel-ca").ConfigMap.Name != "otel-ca" {
		t.Errorf("OTLP CA: %+v", env["OTEL_EXPORTER_OTLP_CERTIFICATE"])
	}
	if a := env["OTEL_RESOURCE_ATTRIBUTES"].Value; a != "deployment.environment.name=production,k8s.cluster.name=gpu-west-1" {
		t.Errorf("OTEL_RESOURCE_ATTRIBUTES %q", a)
	}
	sm := r.get(t, "ServiceMonitor", fullname).(*monitoringv1.ServiceMonitor)
	ep := sm.Spec.Endpoints[0]
	if ep.Scheme == nil || *ep.Scheme != "https" || ep.BasicAuth == nil || ep.TLSConfig == nil {
		t.Errorf("ServiceMonitor endpoint %+v", ep)
	}
}
