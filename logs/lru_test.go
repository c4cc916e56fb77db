package logs

import (
	"strconv"
	"testing"
)

func TestLRUForgetsTheLeastRecentlyUsedKey(t *testing.T) {
	made := 0
	c := NewLRU(3, func() *int { made++; return new(int) })
	for _, k := range []string{"a", "b", "c"} {
		*c.GetOrCreate(k) = len(k)
	}
	if _, ok := c.Get("a"); !ok { // a is now the most recently used
		t.Fatal("a forgotten within the bound")
	}
	c.GetOrCreate("d") // forgets b, the least recently used
	if _, ok := c.Get("b"); ok {
		t.Fatal("b kept beyond the bound")
	}
	for _, k := range []string{"a", "c", "d"} {
		if _, ok := c.Get(k); !ok {
			t.Fatalf("%s forgotten", k)
		}
	}
	if _, ok := c.Get("never"); ok || c.Len() != 3 || made != 4 {
		t.Fatalf("Get of an unknown key changed the table: len %d, values made %d", c.Len(), made)
	}
	if p := c.GetOrCreate("a"); *p != 1 {
		t.Fatalf("GetOrCreate of a held key made a new value (%d)", *p)
	}
}

func TestLRUStaysBoundedUnderManyKeys(t *testing.T) {
	c := NewLRU(100, func() struct{} { return struct{}{} })
	for i := range 10_000 {
		c.GetOrCreate("k" + strconv.Itoa(i))
		if c.Len() > 100 {
			t.Fatalf("table grew to %d keys", c.Len())
		}
	}
	if len(c.items) != c.order.Len() {
		t.Fatalf("map %d and list %d disagree", len(c.items), c.order.Len())
	}
}
