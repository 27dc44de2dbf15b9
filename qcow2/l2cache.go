package qcow2

import "container/list"

// l2Table is one decoded L2 table held in the cache.
type l2Table struct {
	off     uint64 // host offset of the table
	entries []uint64
	dirty   bool
	elem    *list.Element
}

// l2Cache is an LRU of L2 tables keyed by host offset. Guarded by Image.mu.
type l2Cache struct {
	max    int
	tables map[uint64]*l2Table
	lru    *list.List // front: most recently used
}

func newL2Cache(max int) *l2Cache {
	return &l2Cache{max: max, tables: map[uint64]*l2Table{}, lru: list.New()}
}

func (c *l2Cache) get(off uint64) *l2Table {
	t := c.tables[off]
	if t != nil {
		c.lru.MoveToFront(t.elem)
	}
	return t
}

func (c *l2Cache) add(t *l2Table) {
	t.elem = c.lru.PushFront(t)
	c.tables[t.off] = t
}

// victim returns the least recently used table when the cache is full.
func (c *l2Cache) victim() *l2Table {
	if len(c.tables) < c.max {
		return nil
	}
	return c.lru.Back().Value.(*l2Table)
}

func (c *l2Cache) remove(t *l2Table) {
	c.lru.Remove(t.elem)
	delete(c.tables, t.off)
}

func (c *l2Cache) dirtyTables() []*l2Table {
	var out []*l2Table
	for _, t := range c.tables {
		if t.dirty {
			out = append(out, t)
		}
	}
	return out
}

// defaultL2CacheTables is enough tables to map 8 GiB of the virtual disk, and
// never fewer than 16.
func defaultL2CacheTables(clusterBits uint32) int {
	perTable := int64(1) << (2*clusterBits - 3)
	n := int((int64(8<<30) + perTable - 1) / perTable)
	if n < 16 {
		n = 16
	}
	return n
}
