package logs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalidQuery wraps every refusal of a malformed q, sort, paging value or log id; the
// management API answers it with 400.
var ErrInvalidQuery = errors.New("logs: invalid query")

// ErrQueryTooLong: q is longer than MaxQueryLen (the API answers 414). It wraps
// ErrInvalidQuery.
var ErrQueryTooLong = fmt.Errorf("%w: q longer than %d bytes", ErrInvalidQuery, MaxQueryLen)

// MaxQueryLen bounds the length of q.
const MaxQueryLen = 2048

// maxTerms bounds the number of terms in one q.
const maxTerms = 64

// topFields are the event fields q can name (as in the identity SaaS's log search), with their
// accessors.
var topFields = map[string]func(*Event) string{
	"type":          func(e *Event) string { return e.Type },
	"description":   func(e *Event) string { return e.Description },
	"connection":    func(e *Event) string { return e.Connection },
	"connection_id": func(e *Event) string { return e.ConnectionID },
	"strategy":      func(e *Event) string { return e.Strategy },
	"strategy_type": func(e *Event) string { return e.StrategyType },
	"client_id":     func(e *Event) string { return e.ClientID },
	"client_name":   func(e *Event) string { return e.ClientName },
	"ip":            func(e *Event) string { return e.IP },
	"user_agent":    func(e *Event) string { return e.UserAgent },
	"user_id":       func(e *Event) string { return e.UserID },
	"user_name":     func(e *Event) string { return e.UserName },
	"hostname":      func(e *Event) string { return e.Hostname },
	"log_id":        func(e *Event) string { return e.LogID },
	"date":          func(e *Event) string { return e.Date },
}

// bareFields are the fields a term without "field:" searches (as in the identity SaaS's log
// search).
var bareFields = []string{"client_name", "connection", "description", "ip", "log_id", "type", "user_name"}

type matchKind int

const (
	matchExact  matchKind = iota
	matchPrefix           // value*
	matchSuffix           // *value
	matchAny              // *: the field is present and not empty
	matchRange            // [lo TO hi], {lo TO hi}
)

// term is one field:value condition.
type term struct {
	field string // "" for a bare term; "details.a.b" for a detail
	kind  matchKind
	value string
	// Range bounds; an empty bound is open ("*").
	lo, hi         string
	loIncl, hiIncl bool
	// needle is text that the stored JSON of any matching event contains (nil: no such
	// shortcut), so that most non-matching entries are skipped without being decoded.
	needle []byte
}

// setNeedle fills t.needle for exact, prefix and suffix terms on event fields: JSON escapes
// each character on its own, so the escaped value (or part) appears in the encoded event.
func (t *term) setNeedle() {
	if strings.HasPrefix(t.field, "details.") || t.value == "" {
		return
	}
	switch t.kind {
	case matchExact, matchPrefix, matchSuffix:
		if b, err := json.Marshal(t.value); err == nil && len(b) > 2 {
			t.needle = b[1 : len(b)-1]
		}
	}
}

// mayMatch reports whether raw, an encoded event, can match f (false only when it cannot).
func (f Filter) mayMatch(raw []byte) bool {
	for i := range f.terms {
		if n := f.terms[i].needle; n != nil && !bytes.Contains(raw, n) {
			return false
		}
	}
	return true
}

// Filter is a parsed q: every term must match (AND). The zero Filter matches every event.
type Filter struct {
	terms []term
}

// IsZero reports whether f has no terms.
func (f Filter) IsZero() bool { return len(f.terms) == 0 }

// Match reports whether ev satisfies every term of f.
func (f Filter) Match(ev *Event) bool {
	for i := range f.terms {
		if !f.terms[i].match(ev) {
			return false
		}
	}
	return true
}

func (t *term) match(ev *Event) bool {
	if t.field == "" {
		for _, name := range bareFields {
			if t.matchValue(name, topFields[name](ev)) {
				return true
			}
		}
		return false
	}
	if get, ok := topFields[t.field]; ok {
		return t.matchValue(t.field, get(ev))
	}
	v, ok := detailValue(ev.Details, strings.TrimPrefix(t.field, "details."))
	return ok && t.matchValue(t.field, v)
}

// matchValue compares one field value. Dates compare on their leading characters, so
// date:2024-01-15 is that whole day and [2024-01-01 TO 2024-01-31] includes the 31st.
func (t *term) matchValue(field, v string) bool {
	if v == "" {
		return false
	}
	isDate := field == "date"
	cut := func(bound string) string {
		if isDate && len(v) > len(bound) {
			return v[:len(bound)]
		}
		return v
	}
	switch t.kind {
	case matchExact:
		return cut(t.value) == t.value
	case matchPrefix:
		return strings.HasPrefix(v, t.value)
	case matchSuffix:
		return strings.HasSuffix(v, t.value)
	case matchAny:
		return true
	case matchRange:
		if t.lo != "" {
			c := strings.Compare(cut(t.lo), t.lo)
			if c < 0 || c == 0 && !t.loIncl {
				return false
			}
		}
		if t.hi != "" {
			c := strings.Compare(cut(t.hi), t.hi)
			if c > 0 || c == 0 && !t.hiIncl {
				return false
			}
		}
		return true
	}
	return false
}

// detailValue looks up a dotted path in details; strings, booleans and numbers match.
func detailValue(details map[string]any, path string) (string, bool) {
	var cur any = details
	for part := range strings.SplitSeq(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[part]; !ok {
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case int:
		return strconv.Itoa(v), true
	case fmt.Stringer: // json.Number
		return v.String(), true
	}
	return "", false
}

// ParseQuery parses q, the Lucene subset of the identity SaaS's GET /api/v2/logs:
//
//	type:f connection:"corp oidc" AND details.error:access_denied client_id:app*
//
// Terms are field:value, AND-combined (by whitespace or an explicit AND). A value is a bare
// word (backslash escapes one character), a "quoted string" (exact; \" and \\ escaped), a
// word with a trailing * (prefix) or a leading * and at least 3 more characters (suffix), *
// alone (field present), or a range [lo TO hi] / {lo TO hi} (inclusive / exclusive, * open).
// Matching is case-sensitive and untokenized. Fields: type, description, connection,
// connection_id, strategy, strategy_type, client_id, client_name, ip, user_agent, user_id,
// user_name, hostname, log_id, date (a date prefix: date:2024-01-15), and details.KEY (a
// dotted path to a string, boolean or number). A term without a field searches client_name,
// connection, description, ip, log_id, type and user_name. OR, NOT, parentheses and the ?
// wildcard are refused. Errors wrap ErrInvalidQuery and name the offending field or token.
func ParseQuery(q string) (Filter, error) {
	if len(q) > MaxQueryLen {
		return Filter{}, ErrQueryTooLong
	}
	p := &parser{s: q}
	var f Filter
	needTerm := false // after AND
	for range len(q) + 1 {
		p.skipSpace()
		if p.done() {
			break
		}
		if w := p.peekWord(); w == "AND" || w == "OR" || w == "NOT" || w == "&&" || w == "||" {
			if w != "AND" && w != "&&" {
				return Filter{}, p.errorf("operator %s is not supported (terms are AND-combined)", w)
			}
			if len(f.terms) == 0 || needTerm {
				return Filter{}, p.errorf("AND without a term before it")
			}
			p.i += len(w)
			needTerm = true
			continue
		}
		t, err := p.term()
		if err != nil {
			return Filter{}, err
		}
		if len(f.terms) == maxTerms {
			return Filter{}, p.errorf("more than %d terms", maxTerms)
		}
		t.setNeedle()
		f.terms = append(f.terms, t)
		needTerm = false
	}
	if needTerm {
		return Filter{}, p.errorf("AND without a term after it")
	}
	return f, nil
}

// QuoteTerm returns field:"value" with value quoted for ParseQuery (an exact match), for
// callers that build q from flags.
func QuoteTerm(field, value string) string {
	var b strings.Builder
	b.WriteString(field)
	b.WriteString(`:"`)
	for _, r := range value {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

type parser struct {
	s string
	i int
}

func (p *parser) done() bool { return p.i >= len(p.s) }

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: at offset %d: %s", ErrInvalidQuery, p.i, fmt.Sprintf(format, args...))
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (p *parser) skipSpace() {
	for !p.done() && isSpace(p.s[p.i]) {
		p.i++
	}
}

// peekWord returns the characters up to the next space.
func (p *parser) peekWord() string {
	j := p.i
	for j < len(p.s) && !isSpace(p.s[j]) {
		j++
	}
	return p.s[p.i:j]
}

func isFieldChar(c byte) bool {
	return c == '_' || c == '.' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// term parses one [field:]value.
func (p *parser) term() (term, error) {
	switch c := p.s[p.i]; c {
	case '(', ')':
		return term{}, p.errorf("parentheses are not supported")
	case '-', '!', '+':
		return term{}, p.errorf("operator %q is not supported", c)
	}
	start := p.i
	j := p.i
	for j < len(p.s) && isFieldChar(p.s[j]) {
		j++
	}
	var t term
	if j < len(p.s) && p.s[j] == ':' && j > start {
		t.field = p.s[start:j]
		if err := checkField(t.field); err != nil {
			return term{}, p.errorf("%v", err)
		}
		p.i = j + 1
		if p.done() || isSpace(p.s[p.i]) {
			return term{}, p.errorf("no value for field %q", t.field)
		}
	}
	if err := p.value(&t); err != nil {
		return term{}, err
	}
	if !p.done() && !isSpace(p.s[p.i]) {
		return term{}, p.errorf("unexpected %q after a value", p.s[p.i])
	}
	return t, nil
}

// checkField accepts the known fields and details.KEY paths.
func checkField(name string) error {
	if _, ok := topFields[name]; ok {
		return nil
	}
	if rest, ok := strings.CutPrefix(name, "details."); ok && rest != "" {
		for part := range strings.SplitSeq(rest, ".") {
			if part == "" {
				return fmt.Errorf("field %q has an empty path element", name)
			}
		}
		return nil
	}
	return fmt.Errorf("unknown field %q", name)
}

// value parses the value of t at p.i.
func (p *parser) value(t *term) error {
	switch p.s[p.i] {
	case '"':
		v, err := p.quoted()
		if err != nil {
			return err
		}
		if v == "" {
			return p.errorf("empty quoted value")
		}
		t.kind, t.value = matchExact, v
		return nil
	case '[', '{':
		return p.rangeValue(t)
	}
	v, lead, trail, err := p.word()
	if err != nil {
		return err
	}
	switch {
	case lead && v == "" && !trail:
		t.kind = matchAny
	case lead && trail:
		return p.errorf("a value may have a * at one end only")
	case lead:
		if len(v) < 3 {
			return p.errorf("a leading * needs at least 3 more characters")
		}
		t.kind, t.value = matchSuffix, v
	case trail:
		if v == "" {
			return p.errorf("empty value before *")
		}
		t.kind, t.value = matchPrefix, v
	default:
		t.kind, t.value = matchExact, v
	}
	return nil
}

// quoted reads a "..." string at p.i.
func (p *parser) quoted() (string, error) {
	start := p.i
	p.i++ // opening quote
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		switch c {
		case '\\':
			if p.i+1 >= len(p.s) {
				return "", p.errorf("dangling backslash")
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
			continue
		case '"':
			p.i++
			return b.String(), nil
		}
		b.WriteByte(c)
		p.i++
	}
	p.i = start
	return "", p.errorf("unterminated quoted value")
}

// word reads an unquoted value up to a space or (inside a range) a closing bracket, reporting
// an unescaped * at its start or end.
func (p *parser) word() (v string, lead, trail bool, err error) {
	var b strings.Builder
	first := true
	for !p.done() {
		c := p.s[p.i]
		if isSpace(c) || c == ']' || c == '}' {
			break
		}
		switch c {
		case '\\':
			if p.i+1 >= len(p.s) {
				return "", false, false, p.errorf("dangling backslash")
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
			first = false
			continue
		case '*':
			switch {
			case first:
				lead = true
			case p.i+1 == len(p.s) || isSpace(p.s[p.i+1]) || p.s[p.i+1] == ']' || p.s[p.i+1] == '}':
				trail = true
			default:
				return "", false, false, p.errorf("a * wildcard is allowed only at the start or end of a value")
			}
			p.i++
			first = false
			continue
		case '?':
			return "", false, false, p.errorf("the ? wildcard is not supported")
		case '(', ')', '[', '{', '"':
			return "", false, false, p.errorf("unescaped %q in a value", c)
		}
		b.WriteByte(c)
		p.i++
		first = false
	}
	if b.Len() == 0 && !lead && !trail {
		return "", false, false, p.errorf("empty value")
	}
	return b.String(), lead, trail, nil
}

// rangeValue parses [lo TO hi] or {lo TO hi}; brackets may be mixed, * is open.
func (p *parser) rangeValue(t *term) error {
	t.kind = matchRange
	t.loIncl = p.s[p.i] == '['
	p.i++
	bound := func() (string, error) {
		p.skipSpace()
		if p.done() {
			return "", p.errorf("unterminated range")
		}
		if p.s[p.i] == '"' {
			return p.quoted()
		}
		v, lead, trail, err := p.word()
		if err != nil {
			return "", err
		}
		if lead || trail {
			if v != "" || lead && trail {
				return "", p.errorf("wildcards are not allowed inside a range bound")
			}
			return "", nil // "*": open
		}
		return v, nil
	}
	lo, err := bound()
	if err != nil {
		return err
	}
	p.skipSpace()
	if !strings.HasPrefix(p.s[p.i:], "TO") {
		return p.errorf("range needs \"lo TO hi\"")
	}
	p.i += 2
	if p.done() || !isSpace(p.s[p.i]) {
		return p.errorf("range needs \"lo TO hi\"")
	}
	hi, err := bound()
	if err != nil {
		return err
	}
	p.skipSpace()
	if p.done() || (p.s[p.i] != ']' && p.s[p.i] != '}') {
		return p.errorf("unterminated range")
	}
	t.hiIncl = p.s[p.i] == ']'
	p.i++
	t.lo, t.hi = lo, hi
	return nil
}
