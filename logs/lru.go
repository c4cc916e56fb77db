package logs

import "container/list"

// LRU holds a value per key for at most max keys, forgetting the least recently used key
// first: the per-key state of limits (the Limiter's client IPs; the broker's rate limits and
// live login transactions), which keys that anyone can make up must not grow. It is not safe
// for concurrent use: its owner holds a lock.
type LRU[V any] struct {
	max      int
	newValue func() V
	order    *list.List // of *lruItem[V], most recently used first
	items    map[string]*list.Element
}

type lruItem[V any] struct {
	key   string
	value V
}

// NewLRU returns an LRU of at most max keys (at least 1) whose new keys get newValue().
func NewLRU[V any](max int, newValue func() V) *LRU[V] {
	return &LRU[V]{max: max, newValue: newValue, order: list.New(), items: map[string]*list.Element{}}
}

// Get returns the value of key and marks key used; ok is false, and nothing changes, when c
// does not hold key.
func (c *LRU[V]) Get(key string) (v V, ok bool) {
	el, ok := c.items[key]
	if !ok {
		return v, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruItem[V]).value, true
}

// GetOrCreate returns the value of key, a new one when c does not hold key (forgetting the
// least recently used key when c then holds more than max), and marks key used.
func (c *LRU[V]) GetOrCreate(key string) V {
	if v, ok := c.Get(key); ok {
		return v
	}
	it := &lruItem[V]{key: key, value: c.newValue()}
	c.items[key] = c.order.PushFront(it)
	if c.order.Len() > max(c.max, 1) { // one key was added: at most one to forget
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.items, old.Value.(*lruItem[V]).key)
	}
	return it.value
}

// Len reports how many keys c holds.
func (c *LRU[V]) Len() int { return c.order.Len() }
