package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"unicode"

	"github.com/dpop-broker/dpop-broker/logs"
)

// Management API bodies are read strictly: encoding/json matches a member name to a field
// case-insensitively, with Unicode folding (client_ſecret, U+017F, is client_secret), and
// keeps the last of duplicate members. strictMembers walks a body's tokens before it is
// decoded and refuses both, naming the member, so that what the broker decodes is exactly what
// a reader of the body sees (RFC 8259 §4: names within an object should be unique).

// maxBodyDepth bounds the nesting of a management body (the deepest real one, a connection's
// options.upstream_params entry, is 4).
const maxBodyDepth = 16

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// strictMembers checks raw, a JSON value decoded into a value of type t (nil: any), member by
// member: every object member of a struct is exactly one of its JSON names (case-sensitive),
// and no object has a member twice. path names the value in errors ("options").
func strictMembers(raw []byte, t reflect.Type, path string) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := walkValue(dec, t, path, 0); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("the body must be one JSON value")
	}
	return nil
}

// walkValue reads one value from dec, checking the members of its objects against t.
func walkValue(dec *json.Decoder, t reflect.Type, path string, depth int) error {
	if depth > maxBodyDepth {
		return fmt.Errorf("%s: nested more than %d levels", orBody(path), maxBodyDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return errors.New("the body is not valid JSON")
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessageType || t != nil && t.Kind() == reflect.Interface {
		t = nil // decoded later (or not at all): only duplicates are checked
	}
	switch tok {
	case json.Delim('{'):
		return walkObject(dec, t, path, depth)
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walkValue(dec, elem, fmt.Sprintf("%s[%d]", orBody(path), i), depth+1); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ]
		return err
	}
	return nil
}

// walkObject reads the members of an object whose '{' was read.
func walkObject(dec *json.Decoder, t reflect.Type, path string, depth int) error {
	var fields map[string]reflect.Type
	if t != nil && t.Kind() == reflect.Struct {
		fields = jsonFields(t)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errors.New("the body is not valid JSON")
		}
		name, _ := tok.(string)
		at := name
		if path != "" {
			at = path + "." + name
		}
		if seen[name] {
			return fmt.Errorf("duplicate member %s", showMember(name, path))
		}
		seen[name] = true
		var next reflect.Type
		switch {
		case fields != nil:
			ft, ok := fields[name]
			if !ok {
				return unknownMember(name, path, fields)
			}
			next = ft
		case t != nil && t.Kind() == reflect.Map:
			next = t.Elem()
		}
		if err := walkValue(dec, next, at, depth+1); err != nil {
			return err
		}
	}
	_, err := dec.Token() // }
	return err
}

// unknownMember refuses a member that is not exactly a field's JSON name; one that differs
// from a name only by case (as encoding/json would accept) says so.
func unknownMember(name, path string, fields map[string]reflect.Type) error {
	for f := range fields {
		if strings.EqualFold(f, name) {
			return additionalProperty(fmt.Sprintf("%s (member names are case-sensitive: %s)", showMember(name, path), f))
		}
	}
	return additionalProperty(showMember(name, path))
}

// additionalProperty is the refusal of an unknown member, in the identity SaaS's words.
type additionalProperty string

func (a additionalProperty) Error() string { return "Additional properties not allowed: " + string(a) }

// jsonFields returns the JSON names of t's exported fields (embedded structs flattened) with
// their types, as encoding/json names them.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func orBody(path string) string {
	if path == "" {
		return "the body"
	}
	return path
}

// showMember names a member for an error message: its name (quoted when it has characters
// that do not print, clipped to 128 bytes), and the object it is in unless that is the body.
func showMember(name, path string) string {
	if len(name) > 128 {
		name = name[:128] + "…"
	}
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) {
		name = strconv.Quote(name)
	}
	if path != "" {
		name += " in " + path
	}
	return name
}

// secretMember reports whether a body member holds a secret: its name, case-folded with
// Unicode folding as encoding/json matches it (CLIENT_SECRET, client_ſecret), contains
// "secret" or "password".
func secretMember(name string) bool {
	folded := logs.FoldName(name)
	return strings.Contains(folded, "secret") || strings.Contains(folded, "password")
}
