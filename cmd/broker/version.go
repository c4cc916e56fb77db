package main

import (
	"fmt"
	"io"

	"github.com/dpop-broker/dpop-broker/buildinfo"
)

// cmdVersion prints the build of this binary (package buildinfo): `broker version` and
// `broker --version`.
func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", stderr)
	if err := fs.Parse(args); err != nil {
		return flagExit(fs, err, stdout)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "broker version: unexpected argument %q\n", fs.Arg(0))
		return usageMistake(stderr, findCommand("version"))
	}
	printVersion(stdout, buildinfo.Read())
	return exitOK
}

// printVersion writes b as `broker version` shows it: which values the build stamped and
// which came from the Go toolchain's record is said where it matters (the date).
func printVersion(w io.Writer, b buildinfo.Info) {
	commit := b.Commit
	if b.Modified {
		commit += " (with uncommitted changes)"
	}
	date := b.Date
	if b.DateIsCommitTime {
		date += " (the commit's time: the build date was not stamped)"
	}
	fmt.Fprintf(w, "dpop-broker %s\ncommit:     %s\ngo:         %s\nbuild date: %s\n", b.Version, commit, b.GoVersion, date)
}
