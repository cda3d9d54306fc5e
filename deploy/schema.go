package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/vramseal/vramseal/alerts"
	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/sealer"
)

// schema is a JSON Schema (draft 7, what Helm validates values with).
type schema = map[string]any

// durationPattern is what time.ParseDuration accepts, written as the
// chart's values write durations ("5m", "1h30m", "90s", "0").
const durationPattern = `^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`

// configEnum returns the values of a configuration key (a dotted path)
// with a fixed set of them; the rest of the configuration schema follows
// from the Go types.
func configEnum(path string) ([]string, bool) {
	switch path {
	case "device":
		return []string{config.DeviceSim, config.DeviceCUDA, config.DeviceAuto}, true
	case "verify.mode":
		return []string{string(sealer.VerifyHost), string(sealer.VerifyDevice)}, true
	}
	return nil, false
}

// ConfigSchema is the JSON Schema of the agent's configuration file, derived
// from config.Config the way its decoder reads it: the yaml tags name the
// keys (inline structs flattened), every mapping refuses unknown keys,
// durations are strings such as "5m", unsigned integers are at least 0 and
// pointers may be null. So the schema follows the configuration types: a
// key added there is in the schema at the next `make generate`.
func ConfigSchema() schema {
	s := typeSchema(reflect.TypeFor[config.Config](), "")
	s["description"] = "The agent's configuration (docs/config.md), written as config.yml into the ConfigMap."
	return s
}

func typeSchema(t reflect.Type, path string) schema {
	durationType := reflect.TypeFor[time.Duration]()
	if e, ok := configEnum(path); ok {
		return enum(e...)
	}
	switch {
	case t == durationType:
		return schema{"type": "string", "pattern": durationPattern,
			"description": "A duration such as 5m, 90s or 2160h."}
	case t.Kind() == reflect.Pointer:
		s := typeSchema(t.Elem(), path)
		s["type"] = []any{s["type"], "null"}
		return s
	case t.Kind() == reflect.Struct:
		props := schema{}
		structFields(t, path, props)
		return schema{"type": "object", "additionalProperties": false, "properties": props}
	case t.Kind() == reflect.Slice:
		return schema{"type": []any{"array", "null"}, "items": typeSchema(t.Elem(), path+"[]")}
	case t.Kind() == reflect.String:
		return schema{"type": "string"}
	case t.Kind() == reflect.Bool:
		return schema{"type": "boolean"}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return schema{"type": "integer"}
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		return schema{"type": "integer", "minimum": 0}
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return schema{"type": "number"}
	}
	panic(fmt.Sprintf("deploy: no JSON Schema for %s (%s): teach typeSchema this type", path, t))
}

// structFields adds t's YAML keys to props, following inline structs, as
// the configuration's decoder does.
func structFields(t reflect.Type, path string, props schema) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if opts == "inline" {
			structFields(f.Type, path, props)
			continue
		}
		sub := name
		if path != "" {
			sub = path + "." + name
		}
		props[name] = typeSchema(f.Type, sub)
	}
}

// obj is an object schema that refuses unknown keys.
func obj(props schema) schema {
	return schema{"type": "object", "additionalProperties": false, "properties": props}
}

// Schema shorthands for the chart's own values, each a fresh schema.
// Kubernetes fields passed through as they are (resources, affinity, …)
// are checked by the API server, not here.
func str() schema     { return schema{"type": "string"} }
func boolean() schema { return schema{"type": "boolean"} }
func anyMap() schema  { return schema{"type": "object"} }
func anyList() schema { return schema{"type": "array"} }
func strMap() schema {
	return schema{"type": "object", "additionalProperties": schema{"type": "string"}}
}
func enum(values ...string) schema { return schema{"type": "string", "enum": values} }
func duration() schema             { return schema{"type": "string", "pattern": durationPattern} }

// promDuration is a Prometheus duration (a ServiceMonitor's interval, a
// rule's for).
func promDuration() schema {
	return schema{"type": "string", "pattern": `^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`}
}

func monitorSchema() schema {
	return obj(schema{
		"enabled": boolean(), "additionalLabels": strMap(), "interval": promDuration(), "scrapeTimeout": promDuration(),
		"relabelings": anyList(), "metricRelabelings": anyList(),
		"scheme": enum("", "http", "https"), "tlsConfig": anyMap(), "basicAuth": anyMap(),
	})
}

// ruleOverridesSchema lists every alert of the rule file: an override for
// an alert that does not exist (a typo) is refused.
func ruleOverridesSchema(rules []byte) (schema, error) {
	rf, err := alerts.Parse(rules)
	if err != nil {
		return nil, fmt.Errorf("values schema: %w", err)
	}
	props := schema{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			props[r.Alert] = obj(schema{
				"enabled": boolean(), "for": promDuration(),
				"severity": enum("critical", "warning", "info"),
				"labels":   strMap(), "annotations": strMap(),
			})
		}
	}
	return obj(props), nil
}

// ValuesSchema is the chart's values.schema.json: the chart's own values,
// and under config the agent's configuration (ConfigSchema).
func ValuesSchema(rules []byte) ([]byte, error) {
	overrides, err := ruleOverridesSchema(rules)
	if err != nil {
		return nil, err
	}
	root := obj(schema{
		"global": anyMap(), // set by Helm for parent charts
		"image": obj(schema{"repository": str(), "tag": str(), "pullPolicy": enum("Always", "IfNotPresent", "Never"),
			"digest": schema{"type": "string", "pattern": `^(|sha256:[0-9a-f]{64})$`}}),
		"imagePullSecrets": anyList(), "nameOverride": str(), "fullnameOverride": str(), "commonLabels": strMap(),
		"serviceAccount": obj(schema{"create": boolean(), "name": str(), "annotations": strMap()}),
		"podAnnotations": strMap(), "podLabels": strMap(),
		"gpu": obj(schema{"mode": enum("runtimeClass", "privileged"),
			"visibleDevices": str(), "driverCapabilities": str(), "driverRoot": str()}),
		"runtimeClassName": str(), "hostPID": boolean(),
		"nodeSelector": strMap(), "affinity": anyMap(), "tolerations": anyList(), "priorityClassName": str(),
		"updateStrategy": anyMap(), "terminationGracePeriodSeconds": schema{"type": "integer", "minimum": 0},
		"resources": anyMap(), "extraEnv": anyList(), "extraVolumes": anyList(), "extraVolumeMounts": anyList(),
		"log": obj(schema{"level": enum("debug", "info", "warn", "error"),
			"format": enum("logfmt", "json")}),
		"configAutoReloadInterval": duration(), "rollOnConfigChange": boolean(),
		"config":       ConfigSchema(),
		"secret":       obj(schema{"existingSecret": str(), "key": str()}),
		"models":       obj(schema{"hostPath": str(), "mountPath": str()}),
		"spool":        obj(schema{"hostPath": str()}),
		"sockets":      obj(schema{"hostPath": str()}),
		"handoff":      obj(schema{"enabled": boolean()}),
		"podResources": obj(schema{"enabled": boolean(), "hostPath": str()}),
		"web": obj(schema{"port": schema{"type": "integer", "minimum": 1, "maximum": 65535}, "tls": obj(schema{"enabled": boolean(), "secretName": str()}),
			"basicAuth": obj(schema{"users": strMap()}), "existingConfigSecret": str()}),
		"otel": obj(schema{"endpoint": str(), "protocol": enum("grpc", "http/protobuf"),
			"serviceName": str(), "resourceAttributes": strMap(),
			"headersSecret": obj(schema{"name": str(), "key": str()}),
			"ca":            obj(schema{"configMap": str(), "secret": str(), "key": str()})}),
		"service":        obj(schema{"enabled": boolean(), "annotations": strMap()}),
		"serviceMonitor": monitorSchema(), "podMonitor": monitorSchema(),
		"prometheusRule": obj(schema{"enabled": boolean(), "additionalLabels": strMap(), "rules": overrides}),
		"dashboards": obj(schema{"enabled": boolean(), "namespace": str(), "label": str(), "labelValue": str(),
			"folderAnnotation": str(), "folder": str(), "additionalLabels": strMap()}),
		"test": obj(schema{"enabled": boolean(), "image": str()}),
	})
	root["$schema"] = "http://json-schema.org/draft-07/schema#"
	root["title"] = "vramseal chart values (generated by `make generate` from deploy/schema.go and internal/config; do not edit)"
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("values schema: %w", err)
	}
	return buf.Bytes(), nil
}
