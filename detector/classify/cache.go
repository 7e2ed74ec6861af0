package classify

import (
	"container/list"
	"hash/maphash"
	"slices"
	"sync"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

// Cache remembers classifications, keyed by everything a Result depends on:
// the catalog snapshot's Version, the search path, the role and the text. A
// new snapshot with another version therefore misses, and its entries replace
// the old ones as they age out: swapping snapshots invalidates the cache
// without a call. It holds at most its size of entries, evicting the least
// recently used. It is safe for concurrent use; the zero value is not usable,
// use NewCache.
type Cache struct {
	seed maphash.Seed
	max  int

	mu      sync.Mutex
	entries map[uint64][]*list.Element // by key hash; collisions share a slot
	lru     list.List                  // of *cacheEntry, most recent first
}

type cacheEntry struct {
	hash       uint64
	version    string
	searchPath []string
	role       string
	sql        string
	res        Result
}

// NewCache returns a cache of at most size entries (at least 1).
func NewCache(size int) *Cache {
	return &Cache{seed: maphash.MakeSeed(), max: max(size, 1), entries: make(map[uint64][]*list.Element)}
}

// Classify returns Classify(sql, cat, searchPath, role), from the cache when
// it has it. The Result's slices and map are shared with the cache and other
// callers and must not be modified.
func (c *Cache) Classify(sql string, cat *catalog.Snapshot, searchPath []string, role string) Result {
	if res, ok := c.Get(sql, cat, searchPath, role); ok {
		return res
	}
	res := Classify(sql, cat, searchPath, role)
	c.put(sql, cat, searchPath, role, res)
	return res
}

// Get returns the cached classification, if any. It does not allocate.
func (c *Cache) Get(sql string, cat *catalog.Snapshot, searchPath []string, role string) (Result, bool) {
	version := snapshotVersion(cat)
	h := c.hash(version, searchPath, role, sql)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, el := range c.entries[h] {
		e := el.Value.(*cacheEntry)
		if e.sql == sql && e.version == version && e.role == role && slices.Equal(e.searchPath, searchPath) {
			c.lru.MoveToFront(el)
			return e.res, true
		}
	}
	return Result{}, false
}

// Len returns the number of cached classifications.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

func (c *Cache) put(sql string, cat *catalog.Snapshot, searchPath []string, role string, res Result) {
	version := snapshotVersion(cat)
	h := c.hash(version, searchPath, role, sql)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, el := range c.entries[h] {
		e := el.Value.(*cacheEntry)
		if e.sql == sql && e.version == version && e.role == role && slices.Equal(e.searchPath, searchPath) {
			return // another caller classified it meanwhile
		}
	}
	e := &cacheEntry{hash: h, version: version, searchPath: slices.Clone(searchPath), role: role, sql: sql, res: res}
	c.entries[h] = append(c.entries[h], c.lru.PushFront(e))
	for c.lru.Len() > c.max {
		c.removeLocked(c.lru.Back())
	}
}

func (c *Cache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	slot := slices.DeleteFunc(c.entries[e.hash], func(x *list.Element) bool { return x == el })
	if len(slot) == 0 {
		delete(c.entries, e.hash)
	} else {
		c.entries[e.hash] = slot
	}
}

func (c *Cache) hash(version string, searchPath []string, role, sql string) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.WriteString(version)
	h.WriteByte(0)
	for _, s := range searchPath {
		h.WriteString(s)
		h.WriteByte(0)
	}
	h.WriteByte(1)
	h.WriteString(role)
	h.WriteByte(0)
	h.WriteString(sql)
	return h.Sum64()
}

func snapshotVersion(cat *catalog.Snapshot) string {
	if cat == nil {
		return emptySnapshot.Version()
	}
	return cat.Version()
}
