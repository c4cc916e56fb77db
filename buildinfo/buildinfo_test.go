package buildinfo

import (
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"testing"
)

func TestStampsWinAndMissingValuesFallBackToTheToolchainRecord(t *testing.T) {
	recorded := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/dpop-broker/dpop-broker", Version: "v0.0.0-20261203074619-ca2885ea008e+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "ca2885ea008eec191ae00726511b500b7282d1fa"},
			{Key: "vcs.time", Value: "2026-12-03T07:46:19Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	for _, tc := range []struct {
		name   string
		stamps stamps
		bi     *debug.BuildInfo
		want   Info
	}{
		{
			name:   "release build: every value stamped",
			stamps: stamps{version: "v1.2.3", commit: "0123456789abcdef0123456789abcdef01234567", date: "2026-12-01T10:00:00Z"},
			bi:     recorded,
			want:   Info{Version: "v1.2.3", Commit: "0123456789abcdef0123456789abcdef01234567", GoVersion: "go1.26.8", Date: "2026-12-01T10:00:00Z"},
		},
		{
			name: "go build in a checkout: the module's pseudo-version, the revision and the commit time",
			bi:   recorded,
			want: Info{Version: "v0.0.0-20261203074619-ca2885ea008e+dirty", Commit: "ca2885ea008eec191ae00726511b500b7282d1fa", Modified: true,
				GoVersion: "go1.26.8", Date: "2026-12-03T07:46:19Z", DateIsCommitTime: true},
		},
		{
			name: "go install module@version: the module version, no revision",
			bi:   &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}},
			want: Info{Version: "v1.4.0", Commit: Unknown, GoVersion: "go1.26.8", Date: Unknown},
		},
		{
			name: "go run: nothing recorded but (devel)",
			bi:   &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			want: Info{Version: "(devel)", Commit: Unknown, GoVersion: "go1.26.8", Date: Unknown},
		},
		{
			name:   "only the version stamped: the recorded revision still counts",
			stamps: stamps{version: "v1.2.3"},
			bi:     recorded,
			want: Info{Version: "v1.2.3", Commit: "ca2885ea008eec191ae00726511b500b7282d1fa", Modified: true,
				GoVersion: "go1.26.8", Date: "2026-12-03T07:46:19Z", DateIsCommitTime: true},
		},
		{
			name: "no build information at all",
			want: Info{Version: Unknown, Commit: Unknown, GoVersion: "go1.26.8", Date: Unknown},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolve(tc.stamps, tc.bi, "go1.26.8"); got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestReadReportsTheRunningToolchain(t *testing.T) {
	info := Read()
	if info.GoVersion != runtime.Version() || info.Version == "" || info.Commit == "" || info.Date == "" {
		t.Errorf("Read() = %+v", info)
	}
}

// The Makefile and the Dockerfile stamp exactly this package's variables: a misspelt -X
// target is silently ignored by the linker, and the binary would report "unknown".
func TestBuildFilesStampThePackageVariables(t *testing.T) {
	re := regexp.MustCompile(`-X +(?:github\.com/dpop-broker/dpop-broker/buildinfo|\$\(BUILDINFO\))\.(\w+)=`)
	for _, tc := range []struct {
		file string
		want []string
	}{
		{file: "../Makefile", want: []string{"buildDate", "commit", "version"}},
		{file: "../Dockerfile", want: []string{"buildDate", "commit", "version"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				got = append(got, m[1])
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("-X targets %v, want %v", got, tc.want)
			}
		})
	}
	if b, err := os.ReadFile("../Makefile"); err != nil || !regexp.MustCompile(`(?m)^BUILDINFO += github\.com/dpop-broker/dpop-broker/buildinfo$`).Match(b) {
		t.Errorf("the Makefile's BUILDINFO does not name this package (%v)", err)
	}
}
