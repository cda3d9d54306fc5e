package k8scheck

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// Object is a decoded Kubernetes object.
type Object interface {
	runtime.Object
	metav1.Object
}

// kinds are the object kinds the chart may render, each with its Go type.
var kinds = map[schema.GroupVersionKind]func() Object{
	corev1.SchemeGroupVersion.WithKind("ServiceAccount"):       func() Object { return &corev1.ServiceAccount{} },
	corev1.SchemeGroupVersion.WithKind("ConfigMap"):            func() Object { return &corev1.ConfigMap{} },
	corev1.SchemeGroupVersion.WithKind("Secret"):               func() Object { return &corev1.Secret{} },
	corev1.SchemeGroupVersion.WithKind("Service"):              func() Object { return &corev1.Service{} },
	corev1.SchemeGroupVersion.WithKind("Pod"):                  func() Object { return &corev1.Pod{} },
	appsv1.SchemeGroupVersion.WithKind("DaemonSet"):            func() Object { return &appsv1.DaemonSet{} },
	monitoringv1.SchemeGroupVersion.WithKind("ServiceMonitor"): func() Object { return &monitoringv1.ServiceMonitor{} },
	monitoringv1.SchemeGroupVersion.WithKind("PodMonitor"):     func() Object { return &monitoringv1.PodMonitor{} },
	monitoringv1.SchemeGroupVersion.WithKind("PrometheusRule"): func() Object { return &monitoringv1.PrometheusRule{} },
}

// Helm runs one pinned helm binary with its own empty home (no
// repositories, plugins or cache of the user's), offline.
type Helm struct {
	Bin  string
	Home string
}

// Run runs helm with args and returns its standard output; a failure
// carries its standard error.
func (h Helm) Run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, h.Bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(h.Home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.Home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.Home, "data"),
		"KUBECONFIG="+filepath.Join(h.Home, "no-kubeconfig"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %v: %w\n%s%s", args, err, stderr.Bytes(), stdout.Bytes())
	}
	return stdout.Bytes(), nil
}

// Template renders chart as `helm template` does (release name and
// namespace as given, then args such as -f FILE or --set K=V) and returns
// each object as one YAML document.
func (h Helm) Template(ctx context.Context, chart, release, namespace string, args ...string) ([][]byte, error) {
	out, err := h.Run(ctx, append([]string{"template", release, chart, "--namespace", namespace}, args...)...)
	if err != nil {
		return nil, err
	}
	return Split(out), nil
}

// Split cuts a multi-document YAML file into its non-empty documents.
func Split(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), data...), []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(d))) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(d []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(d, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}

// Decode decodes one object strictly into its Go API type: an unknown
// kind, an unknown or duplicated field, or a value of the wrong type is an
// error.
func Decode(doc []byte) (Object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
	mk, ok := kinds[gvk]
	if !ok {
		return nil, fmt.Errorf("decode: unexpected kind %q (apiVersion %q)", tm.Kind, tm.APIVersion)
	}
	obj := mk()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", tm.Kind, err)
	}
	if obj.GetName() == "" {
		return nil, fmt.Errorf("decode %s: no metadata.name", tm.Kind)
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return obj, nil
}
