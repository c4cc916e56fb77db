package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/dpop-broker/dpop-broker/config"
)

// cmdConfigValidate prints "config OK" (exit 0) or every problem as "KEY: reason" (exit 1).
// Values that come from environment variables not set here are listed as "not set here:"
// lines and do not fail the check (serve refuses to start without them) unless
// --require-env is given. Warnings (allow_insecure_http) are printed either way.
func cmdConfigValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("config validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	requireEnv := fs.Bool("require-env", false, "fail when a referenced environment variable is not set (check the host serve will run on)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: broker config validate [--require-env] FILE")
		return 2
	}
	cfg, problems, err := config.LoadAndValidate(pos[0])
	if err != nil {
		fmt.Fprintf(stdout, "config: %v\n", err)
		return 1
	}
	errs, unset := config.SplitUnsetEnv(problems)
	if *requireEnv {
		// Each unset variable is one error; what the rules would say about its empty value
		// (too short, missing) is not said again.
		errs, unset = append(unset, errs...), nil
	}
	for _, p := range errs {
		fmt.Fprintln(stdout, p.Error())
	}
	for _, p := range unset {
		fmt.Fprintf(stdout, "not set here: %s\n", p.Error())
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stdout, "warning: %s\n", w.Error())
	}
	switch {
	case len(errs) > 0:
		return 1
	case len(unset) > 0:
		fmt.Fprintf(stdout, "config OK (%d values not checked: their environment variables are not set here; serve needs them)\n", len(unset))
	default:
		fmt.Fprintln(stdout, "config OK")
	}
	return 0
}
