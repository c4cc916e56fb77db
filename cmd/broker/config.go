package main

import (
	"fmt"
	"io"
)

// cmdConfigValidate prints "config OK" (exit 0) or every problem as "KEY: reason" (exit 1).
func cmdConfigValidate(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: broker config validate FILE")
		return 2
	}
	_, problems, err := loadAndValidate(args[0])
	if err != nil {
		fmt.Fprintf(stdout, "config: %v\n", err)
		return 1
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stdout, p.Error())
		}
		return 1
	}
	fmt.Fprintln(stdout, "config OK")
	return 0
}
