package broker

import (
	"strconv"
	"strings"

	"github.com/dpop-broker/dpop-broker/logs"
)

// The Logs page's view of management API events (sapi, fapi): who called (a management
// token, or a console operator and how they signed in), the request and its status, as
// labelled facts rather than raw JSON (a refusal's errorCode, message and reason follow them,
// newLogEventData), and the operator in the list's User column.

// apiEventTypes are the events of a management API call or a console action.
var apiEventTypes = map[string]bool{logs.TypeSuccessAPI: true, logs.TypeFailedAPI: true}

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
	add("Operator", logs.Operator(ev))
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
	facts = append(facts, changeFacts(ev.Details["changes"])...)
	return facts // a refusal's errorCode, message and reason follow (newLogEventData)
}

// changeFacts are a write's details.changes (mgmtchanges.go) as facts: the field, and its
// value before → after ("off" for a DPoP alg that is not set; a secret only as changed).
func changeFacts(v any) []logFact {
	list, _ := v.([]any)
	var facts []logFact
	for _, e := range list {
		ch, _ := e.(map[string]any)
		field, _ := ch["field"].(string)
		if field == "" {
			continue
		}
		if n, ok := ch["more"].(float64); ok {
			facts = append(facts, logFact{Label: "Changed", Value: strconv.Itoa(int(n)) + " more fields"})
			continue
		}
		if ch["changed"] == true {
			facts = append(facts, logFact{Label: "Changed " + field, Value: "changed (a secret: not shown)"})
			continue
		}
		unset := "(not set)"
		if strings.HasSuffix(field, "dpop_signing_alg") {
			unset = "off"
		}
		from, ok := ch["from"].(string)
		if !ok {
			from = unset
		}
		to, ok := ch["to"].(string)
		if !ok {
			to = unset
		}
		facts = append(facts, logFact{Label: "Changed " + field, Value: from + " → " + to})
	}
	return facts
}
