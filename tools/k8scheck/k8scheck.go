package k8scheck

import (
	"bytes"
	"fmt"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Object is a decoded Kubernetes object.
type Object interface {
	runtime.Object
	metav1.Object
}

// kinds are the object kinds the manifests may hold, each with its Go type.
var kinds = map[schema.GroupVersionKind]func() Object{
	corev1.SchemeGroupVersion.WithKind("Namespace"):            func() Object { return &corev1.Namespace{} },
	corev1.SchemeGroupVersion.WithKind("ServiceAccount"):       func() Object { return &corev1.ServiceAccount{} },
	corev1.SchemeGroupVersion.WithKind("ConfigMap"):            func() Object { return &corev1.ConfigMap{} },
	corev1.SchemeGroupVersion.WithKind("Secret"):               func() Object { return &corev1.Secret{} },
	corev1.SchemeGroupVersion.WithKind("Service"):              func() Object { return &corev1.Service{} },
	appsv1.SchemeGroupVersion.WithKind("DaemonSet"):            func() Object { return &appsv1.DaemonSet{} },
	monitoringv1.SchemeGroupVersion.WithKind("ServiceMonitor"): func() Object { return &monitoringv1.ServiceMonitor{} },
	monitoringv1.SchemeGroupVersion.WithKind("PrometheusRule"): func() Object { return &monitoringv1.PrometheusRule{} },
}

// Render builds the kustomization in dir as `kubectl kustomize dir` does and
// returns each object as one YAML document.
func Render(dir string) ([][]byte, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var docs [][]byte
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("kustomize %s: %s: %w", dir, r.CurId(), err)
		}
		docs = append(docs, y)
	}
	return docs, nil
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
	return obj, nil
}
