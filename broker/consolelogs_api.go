package broker

import (
	"strconv"

	"github.com/dpop-broker/dpop-broker/logs"
)

// The Logs page's view of management API events (sapi, fapi): who called (a management
// token, or a console operator and how they signed in), the request and its status, as
// labelled facts rather than raw JSON (a refusal's errorCode, message and reason follow them,
// newLogEventData), and the operator in the list's User column.

// apiEventTypes are the events of a management API call or a console action.
var apiEventTypes = map[string]bool{logs.TypeSuccessAPI: true, logs.TypeFailedAPI: true}

// apiEventOperator names who made a management API call: the console operator and how they
// signed in ("token:demo (via token)", "oidc|corp|alice (via broker)"; "(console)" for a
// console event that does not say), else the management token ("ops (management API
// token)"); "" when unknown (a refused, unauthenticated call).
func apiEventOperator(ev *logs.Event) string {
	if !apiEventTypes[ev.Type] {
		return ""
	}
	if c, _ := ev.Details["console"].(map[string]any); c != nil {
		if op, _ := c["operator"].(string); op != "" {
			return withVia(op, c["via"])
		}
	}
	req, _ := ev.Details["request"].(map[string]any)
	auth, _ := req["auth"].(map[string]any)
	user, _ := auth["user"].(string)
	if user == "" {
		return ""
	}
	if via, ok := auth["via"]; ok {
		return withVia(user, via)
	}
	if c, _ := ev.Details["console"].(map[string]any); c != nil {
		return user + " (console)" // a console event recorded without how the operator signed in
	}
	return user + " (management API token)"
}

func withVia(operator string, via any) string {
	if v, _ := via.(string); v != "" {
		return operator + " (via " + v + ")"
	}
	return operator
}

// apiEventFacts are the labelled facts of a management API event: operator, console action,
// request and status; none for other events.
func apiEventFacts(ev *logs.Event) []logFact {
	if !apiEventTypes[ev.Type] {
		return nil
	}
	var facts []logFact
	add := func(label, value string) {
		if value != "" {
			facts = append(facts, logFact{Label: label, Value: value})
		}
	}
	add("Operator", apiEventOperator(ev))
	if c, _ := ev.Details["console"].(map[string]any); c != nil {
		if a, _ := c["action"].(string); a != "" {
			add("Console action", a)
		}
	}
	req, _ := ev.Details["request"].(map[string]any)
	method, _ := req["method"].(string)
	path, _ := req["path"].(string)
	if q, _ := req["query"].(string); q != "" && path != "" {
		path += "?" + q
	}
	if method != "" || path != "" {
		add("Request", method+" "+path)
	}
	resp, _ := ev.Details["response"].(map[string]any)
	if st, ok := resp["statusCode"].(float64); ok {
		add("Status", strconv.Itoa(int(st)))
	} else if st, ok := resp["statusCode"].(int); ok {
		add("Status", strconv.Itoa(st))
	}
	return facts // a refusal's errorCode, message and reason follow (newLogEventData)
}
