package logs

// Operator names who made a management API call or console action (a sapi or fapi event): the
// console operator and how they signed in ("token:demo (via token)", "oidc|corp|alice (via
// broker)"; "(console)" for a console event that does not say), else the management token
// ("ops (management API token)"); "" for other events and when unknown (a refused,
// unauthenticated call). The console's Logs page and `broker logs` show it as the user.
func Operator(ev *Event) string {
	if ev.Type != TypeSuccessAPI && ev.Type != TypeFailedAPI {
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
