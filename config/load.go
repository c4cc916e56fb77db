package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load reads a YAML configuration file. It expands ${VAR} (and ${VAR:-default}) in every
// scalar value, refuses unknown keys and malformed values, and applies defaults. When the
// file parses but has such problems it returns the decoded configuration together with a
// FieldErrors naming each key; a file that cannot be read or parsed gives (nil, error).
// Load does not run Validate.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data)
}

// LoadAndValidate loads a configuration file and returns every problem, from Load and from
// Validate, by key; err is set only when the file cannot be read or parsed. `broker serve`
// refuses to start with any problem; `broker config validate` lists them.
func LoadAndValidate(path string) (*Config, []FieldError, error) {
	cfg, err := Load(path)
	var problems []FieldError
	var fe FieldErrors
	switch {
	case errors.As(err, &fe):
		problems = append(problems, fe...)
	case err != nil:
		return nil, nil, err
	}
	problems = append(problems, cfg.Validate()...)
	return cfg, problems, nil
}

// Parse is Load on bytes.
func Parse(data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	cfg := Default()
	if root.Kind == 0 { // empty document
		cfg.ApplyDefaults()
		return cfg, nil
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	var errs []FieldError
	walk(doc, reflect.TypeFor[Config](), "", &errs)
	if len(errs) > 0 {
		// Decode what we can so that Validate can report further problems; values that
		// failed were blanked by walk.
		_ = doc.Decode(cfg)
		cfg.ApplyDefaults()
		return cfg, FieldErrors(errs)
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("config: re-encode: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	cfg.ApplyDefaults()
	return cfg, nil
}

var (
	durationType       = reflect.TypeFor[time.Duration]()
	upstreamParamType  = reflect.TypeFor[UpstreamParam]()
	claimTemplatesType = reflect.TypeFor[ClaimTemplates]()
)

// walk checks node against type t: unknown keys, scalar shapes (durations, integers,
// booleans), and expands ${VAR} in scalars. Problems are appended to errs under their key.
func walk(n *yaml.Node, t reflect.Type, path string, errs *[]FieldError) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	key := path
	if key == "" {
		key = "(top level)"
	}
	bad := func(reason string) { *errs = append(*errs, FieldError{Key: key, Reason: reason}) }
	switch {
	case t == upstreamParamType && n.Kind == yaml.ScalarNode: // a bare value
		scalar(n, path, errs)
	case t == upstreamParamType && n.Kind != yaml.MappingNode:
		bad("must be a value (prompt: login) or a mapping {value: …} or {alias: …}; several values go in one space-separated string (ui_locales: \"de fr\")")
	case t == claimTemplatesType: // templates: their ${…} are not environment variables
		if n.Kind != yaml.MappingNode {
			bad("must be a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if v := n.Content[i+1]; v.Kind != yaml.ScalarNode || v.ShortTag() == "!!null" {
				*errs = append(*errs, FieldError{Key: joinKey(path, n.Content[i].Value), Reason: "must be a string"})
			} else if v.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) == 0 {
				v.Tag = "!!str"
			}
		}
	case t == durationType:
		if !scalar(n, path, errs) {
			bad("must be a duration such as 30s, 10m or 1h")
			return
		}
		if _, err := time.ParseDuration(n.Value); err != nil {
			bad(fmt.Sprintf("%q is not a duration (use Go syntax such as 30s, 10m or 1h)", n.Value))
			n.Value, n.Tag, n.Style = "0s", "", 0
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad("must be a mapping")
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			child := joinKey(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, FieldError{Key: child, Reason: unknownKey(k.Value, fields)})
				continue
			}
			walk(v, ft, child, errs)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad("must be a list")
			return
		}
		for i, v := range n.Content {
			walk(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			bad("must be a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			walk(n.Content[i+1], t.Elem(), joinKey(path, n.Content[i].Value), errs)
		}
	case t.Kind() == reflect.Int:
		if !scalar(n, path, errs) {
			bad("must be an integer")
			return
		}
		if _, err := strconv.Atoi(n.Value); err != nil || !decodes[int](n) {
			bad(fmt.Sprintf("%q is not an integer", n.Value))
			n.Value, n.Tag, n.Style = "0", "", 0
		}
	case t.Kind() == reflect.Bool:
		if !scalar(n, path, errs) {
			bad("must be true or false")
			return
		}
		if _, err := strconv.ParseBool(n.Value); err != nil || !decodes[bool](n) {
			bad(fmt.Sprintf("%q is not a boolean (use true or false)", n.Value))
			n.Value, n.Tag, n.Style = "false", "", 0
		}
	case t.Kind() == reflect.String:
		if !scalar(n, path, errs) {
			bad("must be a string")
		}
	}
}

// decodes reports whether the YAML decoder takes scalar n as a T. walk asks it besides its own
// rule, so that the decoder never meets a value walk let through: its errors name no key
// (use_par: 1 parses as a boolean but is a YAML int).
func decodes[T any](n *yaml.Node) bool {
	var v T
	return n.Decode(&v) == nil
}

// scalar expands ${VAR} in a scalar node; it reports false when n is not a scalar.
func scalar(n *yaml.Node, path string, errs *[]FieldError) bool {
	if n.Kind != yaml.ScalarNode {
		return false
	}
	if !strings.Contains(n.Value, "${") {
		return true
	}
	v, err := expandEnv(n.Value)
	if err != nil {
		*errs = append(*errs, FieldError{Key: path, Reason: err.Error()})
		v = ""
	}
	n.Value = v
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		n.Style = yaml.DoubleQuotedStyle // stays a string whatever the text
	} else {
		n.Tag, n.Style = "", 0 // let the expanded text resolve (an int from ${PORT}, …)
	}
	return true
}

// yamlFields maps yaml keys to field types, flattening ",inline" structs.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k, v := range yamlFields(f.Type) {
				m[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

func joinKey(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// unknownKey is the reason for a key the configuration does not know: "unknown key", with the
// known key it most likely misspells (at most two edits away).
func unknownKey(k string, known map[string]reflect.Type) string {
	best, bestDist := "", 3
	for name := range known {
		if d := EditDistance(k, name); d < bestDist || d == bestDist && name < best {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return "unknown key"
	}
	return "unknown key (did you mean " + best + "?)"
}

// EditDistance is the optimal string alignment distance between a and b: insertions,
// deletions, substitutions and transpositions of adjacent letters each count one. It ranks
// the "did you mean" of an unknown configuration key and of a mistyped command or flag
// (cmd/broker). Keys and command words are short; longer input is compared by its first 64
// bytes.
func EditDistance(a, b string) int {
	a, b = a[:min(len(a), 64)], b[:min(len(b), 64)]
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
