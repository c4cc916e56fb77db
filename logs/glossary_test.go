package logs

import (
	"strings"
	"testing"
)

func TestGlossaryExplainsEveryEventTypeOnce(t *testing.T) {
	table := GlossaryTable()
	for typ := range descriptions {
		if Meaning(typ) == "" {
			t.Errorf("event type %q has no meaning in the glossary", typ)
		}
		if n := strings.Count(table, "| `"+typ+"` |"); n != 1 {
			t.Errorf("event type %q is in the glossary table %d times, want once", typ, n)
		}
	}
	for typ := range meanings {
		if Description(typ) == "" {
			t.Errorf("the glossary explains %q, which is not an event type", typ)
		}
	}
}
