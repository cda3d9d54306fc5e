package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxFileBytes bounds a configuration file.
const maxFileBytes = 4 << 20

// decode parses data into out (a pointer to a struct already holding the
// defaults) and returns the line of every key path it saw.
func decode(file string, data []byte, out any) (map[string]int, error) {
	if len(data) > maxFileBytes {
		return nil, &Error{File: file, Reason: fmt.Sprintf("file is %d bytes, at most %d allowed", len(data), maxFileBytes)}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return map[string]int{}, nil // an empty file: all defaults
		}
		line, reason := yamlErrLine(err), yamlErrReason(err)
		if parserContextErrors[reason] && line > 0 {
			// yaml.v3 reports these at the 0-based line of the enclosing
			// block or flow collection: say which, 1-based.
			line++
			reason += " in the block or collection that starts on this line"
		}
		return nil, &Error{File: file, Line: line, Reason: "not valid YAML: " + reason}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{File: file, Line: extra.Line, Reason: "more than one YAML document; the configuration is one document"}
	}
	d := &decoder{file: file, lines: map[string]int{}}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return d.lines, nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return d.lines, nil
	}
	if err := d.value(root, reflect.ValueOf(out).Elem(), ""); err != nil {
		return nil, err
	}
	return d.lines, nil
}

// parserContextErrors are the yaml.v3 parser errors located by their
// context (the enclosing collection) rather than by the problem itself.
var parserContextErrors = map[string]bool{
	"did not find expected node content":  true,
	"did not find expected key":           true,
	"did not find expected '-' indicator": true,
	"did not find expected ',' or ']'":    true,
	"did not find expected ',' or '}'":    true,
}

// yamlErrLine digs the line out of a yaml.v3 syntax error ("yaml: line 3: ...").
func yamlErrLine(err error) int {
	s := err.Error()
	if i := strings.Index(s, "line "); i >= 0 {
		rest := s[i+5:]
		j := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if j > 0 {
			n, _ := strconv.Atoi(rest[:j])
			return n
		}
	}
	return 0
}

// yamlErrReason is a yaml.v3 error without its "yaml: line N: " prefix.
func yamlErrReason(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		if _, after, ok := strings.Cut(rest, ": "); ok {
			return after
		}
	}
	return s
}

type decoder struct {
	file  string
	lines map[string]int
}

func (d *decoder) fail(n *yaml.Node, key, format string, args ...any) error {
	return &Error{File: d.file, Key: key, Line: n.Line, Reason: fmt.Sprintf(format, args...)}
}

var durationType = reflect.TypeFor[time.Duration]()

// value decodes n into v; key is v's dotted path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, key string) error {
	if key != "" {
		if _, seen := d.lines[key]; !seen {
			d.lines[key] = n.Line
		}
	}
	if n.Kind == yaml.AliasNode {
		return d.fail(n, key, "YAML aliases are not supported in the configuration")
	}
	if v.Kind() == reflect.Pointer {
		if isNull(n) {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		p := reflect.New(v.Type().Elem())
		if err := d.value(n, p.Elem(), key); err != nil {
			return err
		}
		v.Set(p)
		return nil
	}
	switch {
	case v.Kind() == reflect.Struct:
		return d.mapping(n, v, key)
	case v.Kind() == reflect.Slice:
		return d.sequence(n, v, key)
	}
	if n.Kind != yaml.ScalarNode {
		return d.fail(n, key, "want %s, got a %s", describe(v.Type()), kindName(n))
	}
	if isNull(n) {
		return d.fail(n, key, "want %s, got nothing (null)", describe(v.Type()))
	}
	return d.scalar(n, v, key)
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	}
	return "YAML node"
}

func describe(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration such as 5m or 90s"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "an integer"
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		return "a non-negative integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

// fields lists a struct type's YAML keys, following inline structs.
func fields(t reflect.Type, index []int, out map[string][]int, order *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		idx := append(append([]int(nil), index...), i)
		if opts == "inline" {
			fields(f.Type, idx, out, order)
			continue
		}
		out[name] = idx
		*order = append(*order, name)
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key string) error {
	if isNull(n) {
		return nil // "sim:" with nothing after it keeps the defaults
	}
	if n.Kind != yaml.MappingNode {
		return d.fail(n, key, "want a mapping of keys, got a %s", kindName(n))
	}
	known := map[string][]int{}
	var order []string
	fields(v.Type(), nil, known, &order)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		name := kn.Value
		sub := name
		if key != "" {
			sub = key + "." + name
		}
		if kn.Kind != yaml.ScalarNode {
			return d.fail(kn, key, "a key must be a plain word, got a %s", kindName(kn))
		}
		if kn.Value == "<<" {
			return d.fail(kn, key, "YAML merge keys (<<) are not supported in the configuration")
		}
		idx, ok := known[name]
		if !ok {
			return d.fail(kn, sub, "unknown key; known keys here: %s", strings.Join(order, ", "))
		}
		if first, dup := seen[name]; dup {
			return d.fail(kn, sub, "key given twice (first on line %d)", first)
		}
		seen[name] = kn.Line
		d.lines[sub] = kn.Line
		if err := d.value(vn, v.FieldByIndex(idx), sub); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, key string) error {
	if isNull(n) {
		v.Set(reflect.Zero(v.Type()))
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return d.fail(n, key, "want a list, got a %s", kindName(n))
	}
	out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, en := range n.Content {
		if err := d.value(en, out.Index(i), fmt.Sprintf("%s[%d]", key, i)); err != nil {
			return err
		}
	}
	v.Set(out)
	return nil
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, key string) error {
	s := n.Value
	bad := func(extra string) error {
		shown := s
		if len(shown) > 64 {
			shown = shown[:64] + "…"
		}
		return d.fail(n, key, "want %s, got %q%s", describe(v.Type()), shown, extra)
	}
	switch {
	case v.Type() == durationType:
		dur, err := time.ParseDuration(s)
		if err != nil || n.Tag != "!!str" && n.Tag != "!!int" {
			return bad("")
		}
		if dur < 0 {
			return bad(" (negative)")
		}
		v.SetInt(int64(dur))
	case v.Kind() == reflect.String:
		if n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float" && n.Tag != "!!bool" {
			return bad("")
		}
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		if n.Tag != "!!bool" {
			return bad("")
		}
		v.SetBool(strings.EqualFold(s, "true"))
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64:
		if n.Tag != "!!int" {
			return bad("")
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, 64)
		if err != nil || v.OverflowInt(i) {
			return bad(" (out of range)")
		}
		v.SetInt(i)
	case v.Kind() >= reflect.Uint && v.Kind() <= reflect.Uint64:
		if n.Tag != "!!int" {
			return bad("")
		}
		if strings.HasPrefix(s, "-") {
			return bad(" (negative)")
		}
		u, err := strconv.ParseUint(strings.TrimPrefix(strings.ReplaceAll(s, "_", ""), "+"), 0, 64)
		if err != nil || v.OverflowUint(u) {
			return bad(" (out of range)")
		}
		v.SetUint(u)
	case v.Kind() == reflect.Float64:
		if n.Tag != "!!float" && n.Tag != "!!int" {
			return bad("")
		}
		f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return bad("")
		}
		v.SetFloat(f)
	default:
		return d.fail(n, key, "cannot decode into %s", v.Type())
	}
	return nil
}

// topKeys returns the YAML keys of the top-level fields in which a and b
// differ.
func topKeys(a, b Config) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	known := map[string][]int{}
	var order []string
	fields(va.Type(), nil, known, &order)
	var out []string
	for _, k := range order {
		if !reflect.DeepEqual(va.FieldByIndex(known[k]).Interface(), vb.FieldByIndex(known[k]).Interface()) {
			out = append(out, k)
		}
	}
	return out
}
