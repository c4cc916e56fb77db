package docs

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/logs"
)

var update = flag.Bool("update", false, "rewrite the README's generated sections")

// The README's generated sections (troubleshooting tables, glossary), each between a begin
// and an end line, and what generates it.
var generatedSections = []struct {
	name       string
	begin, end string
	generate   func() string
}{
	{
		name:     "failed logins",
		begin:    "<!-- troubleshooting: generated from logs/troubleshoot.go; edit there, then run go test ./docs -run TestREADMEGeneratedSectionsComeFromTheLogsPackage -update -->\n",
		end:      "<!-- end of troubleshooting -->\n",
		generate: logs.TroubleshootingTable,
	},
	{
		name:     "token endpoint",
		begin:    "<!-- troubleshooting token endpoint: generated from logs/troubleshoot.go; edit there, then run go test ./docs -run TestREADMEGeneratedSectionsComeFromTheLogsPackage -update -->\n",
		end:      "<!-- end of troubleshooting token endpoint -->\n",
		generate: func() string { return logs.TopicTable(logs.TopicToken) },
	},
	{
		name:     "management API",
		begin:    "<!-- troubleshooting management API: generated from logs/troubleshoot.go; edit there, then run go test ./docs -run TestREADMEGeneratedSectionsComeFromTheLogsPackage -update -->\n",
		end:      "<!-- end of troubleshooting management API -->\n",
		generate: func() string { return logs.TopicTable(logs.TopicAPI) },
	},
	{
		name:     "glossary",
		begin:    "<!-- glossary: generated from logs/glossary.go; edit there, then run go test ./docs -run TestREADMEGeneratedSectionsComeFromTheLogsPackage -update -->\n",
		end:      "<!-- end of glossary -->\n",
		generate: logs.GlossaryTable,
	},
}

// The README's troubleshooting tables and the console's event view say the same thing: both
// come from logs/troubleshoot.go. -update rewrites the README's sections.
func TestREADMEGeneratedSectionsComeFromTheLogsPackage(t *testing.T) {
	const path = "../README.md"
	for _, sec := range generatedSections {
		t.Run(sec.name, func(t *testing.T) {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			readme := string(raw)
			before, rest, ok := strings.Cut(readme, sec.begin)
			if !ok {
				t.Fatalf("README.md has no line %q", strings.TrimSpace(sec.begin))
			}
			got, after, ok := strings.Cut(rest, sec.end)
			if !ok {
				t.Fatalf("README.md has no line %q after the section's start", strings.TrimSpace(sec.end))
			}
			want := sec.generate()
			if got == want {
				return
			}
			if *update {
				if err := os.WriteFile(path, []byte(before+sec.begin+want+sec.end+after), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("README.md: troubleshooting section %q rewritten", sec.name)
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
					t.Fatalf("README.md's troubleshooting section %q differs from logs/troubleshoot.go at its line %d:\n README: %q\n   logs: %q\nedit logs/troubleshoot.go, then: go test ./docs -run TestREADMEGeneratedSectionsComeFromTheLogsPackage -update",
						sec.name, i+1, g, w)
				}
			}
		})
	}
}
