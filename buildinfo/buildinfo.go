// Package buildinfo says which build of the broker is running: its version, the commit it was
// built from, the Go toolchain that built it and when it was built (`broker version`, the
// dpop_broker_build_info metric, the startup line of serve and demo).
//
// A release build stamps the values at link time: `make build` and the Dockerfile pass
//
//	-ldflags "-X github.com/dpop-broker/dpop-broker/buildinfo.version=v1.2.3
//	          -X github.com/dpop-broker/dpop-broker/buildinfo.commit=<full revision>
//	          -X github.com/dpop-broker/dpop-broker/buildinfo.buildDate=<RFC 3339 UTC>"
//
// A value that was not stamped falls back to what the Go toolchain recorded in the binary
// (runtime/debug.ReadBuildInfo): the main module's version (v1.2.3 for `go install
// …@v1.2.3`; a pseudo-version with +dirty when `go build` ran in a git checkout; "(devel)"
// otherwise), vcs.revision for the commit and vcs.time, the commit's time, for the date (Date
// then says so). `go run` and builds outside a checkout record no revision: those values are
// "unknown", never guessed.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// Stamped at link time (-ldflags -X); empty when the build did not stamp them.
var (
	version   string
	commit    string
	buildDate string
)

// Unknown is the value of a field neither stamped nor recorded by the toolchain.
const Unknown = "unknown"

// Info describes the running build.
type Info struct {
	Version   string // v1.2.3, a Go pseudo-version, "(devel)" or Unknown
	Commit    string // the full git revision, or Unknown
	Modified  bool   // the toolchain recorded uncommitted changes (vcs.modified); never set by stamps
	GoVersion string // runtime.Version()
	// Date is the build date (RFC 3339), or, when the build was not stamped, the commit's
	// time recorded by the toolchain (DateIsCommitTime), or Unknown.
	Date             string
	DateIsCommitTime bool
}

// Read returns the running binary's build information (computed once).
var Read = sync.OnceValue(func() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(stamps{version: version, commit: commit, date: buildDate}, bi, runtime.Version())
})

// stamps are the link-time values.
type stamps struct{ version, commit, date string }

// resolve combines the link-time stamps with the toolchain's record bi (nil when the binary
// has none): a stamp wins; a missing one falls back to bi, then to Unknown.
func resolve(s stamps, bi *debug.BuildInfo, goVersion string) Info {
	info := Info{Version: s.version, Commit: s.commit, Date: s.date, GoVersion: goVersion}
	var rev, vcsTime string
	modified := false
	if bi != nil {
		if info.Version == "" {
			info.Version = bi.Main.Version
		}
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				rev = kv.Value
			case "vcs.time":
				vcsTime = kv.Value
			case "vcs.modified":
				modified = kv.Value == "true"
			}
		}
	}
	if info.Commit == "" && rev != "" {
		info.Commit, info.Modified = rev, modified
	}
	if info.Date == "" && vcsTime != "" {
		info.Date, info.DateIsCommitTime = vcsTime, true
	}
	for _, f := range []*string{&info.Version, &info.Commit, &info.Date, &info.GoVersion} {
		if *f == "" {
			*f = Unknown
		}
	}
	return info
}
