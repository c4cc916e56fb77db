package docs

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/logs"
)

var update = flag.Bool("update", false, "rewrite the README's generated sections")

// The README's troubleshooting section sits between these lines.
const (
	troubleshootingBegin = "<!-- troubleshooting: generated from logs/troubleshoot.go; edit there, then run go test ./docs -run TestREADMETroubleshootingTableIsGeneratedFromTheLogsPackage -update -->\n"
	troubleshootingEnd   = "<!-- end of troubleshooting -->\n"
)

// The README's troubleshooting table and the console's event view say the same thing: both
// come from logs.TroubleshootingEntries. -update rewrites the README's section.
func TestREADMETroubleshootingTableIsGeneratedFromTheLogsPackage(t *testing.T) {
	const path = "../README.md"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	before, rest, ok := strings.Cut(readme, troubleshootingBegin)
	if !ok {
		t.Fatalf("README.md has no line %q", strings.TrimSpace(troubleshootingBegin))
	}
	got, after, ok := strings.Cut(rest, troubleshootingEnd)
	if !ok {
		t.Fatalf("README.md has no line %q after the troubleshooting section's start", strings.TrimSpace(troubleshootingEnd))
	}
	want := logs.TroubleshootingTable()
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(before+troubleshootingBegin+want+troubleshootingEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("README.md: troubleshooting section rewritten")
		return
	}
	gotLines, wantLines := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(gotLines), len(wantLines)) {
		var g, w string
		if i < len(gotLines) {
			g = gotLines[i]
		}
		if i < len(wantLines) {
			w = wantLines[i]
		}
		if g != w {
			t.Fatalf("README.md's troubleshooting section differs from logs.TroubleshootingTable at its line %d:\n README: %q\n   logs: %q\nedit logs/troubleshoot.go, then: go test ./docs -run %s -update",
				i+1, g, w, t.Name())
		}
	}
}
