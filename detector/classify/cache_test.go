package classify

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
)

func TestCache(t *testing.T) {
	snap := testSnapshot(t)
	other, err := catalog.New(nil, map[string][]string{"public.users": {"email"}})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(2)
	const sql = "SELECT email FROM users"
	if _, ok := c.Get(sql, snap, defaultPath, "app"); ok {
		t.Fatal("Get on an empty cache: got a hit")
	}
	got := c.Classify(sql, snap, defaultPath, "app")
	if want := Classify(sql, snap, defaultPath, "app"); !slices.Equal(got.SensitiveRead, want.SensitiveRead) {
		t.Errorf("Classify: got %+v, want %+v", got, want)
	}
	if _, ok := c.Get(sql, snap, defaultPath, "app"); !ok {
		t.Error("Get after Classify: got a miss")
	}
	for name, miss := range map[string]func() (Result, bool){
		"another snapshot version": func() (Result, bool) { return c.Get(sql, other, defaultPath, "app") },
		"another search path":      func() (Result, bool) { return c.Get(sql, snap, []string{"public"}, "app") },
		"another role":             func() (Result, bool) { return c.Get(sql, snap, defaultPath, "bob") },
		"another text":             func() (Result, bool) { return c.Get(sql+" ", snap, defaultPath, "app") },
	} {
		if _, ok := miss(); ok {
			t.Errorf("%s: got a hit", name)
		}
	}
	// An unknown relation under the other snapshot: its own result.
	if got := c.Classify(sql, other, defaultPath, "app"); got.Complete {
		t.Errorf("other snapshot: got %+v, want incomplete", got)
	}
	c.Classify("SELECT 1", snap, defaultPath, "app")
	if c.Len() != 2 {
		t.Errorf("Len: got %d, want the bound 2", c.Len())
	}
	if _, ok := c.Get(sql, snap, defaultPath, "app"); ok {
		t.Error("least recently used entry: still cached beyond the bound")
	}
}

func TestCacheConcurrent(t *testing.T) {
	snap := testSnapshot(t)
	c := NewCache(16)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				sql := fmt.Sprintf("SELECT email FROM users WHERE id = %d", (g*7+i)%40)
				if got := c.Classify(sql, snap, defaultPath, "app"); !slices.Equal(got.SensitiveRead, []string{email}) {
					t.Errorf("%s: got %q", sql, got.SensitiveRead)
					return
				}
			}
		})
	}
	wg.Wait()
	if c.Len() > 16 {
		t.Errorf("Len: got %d, want at most 16", c.Len())
	}
}

// statement1KB is a realistic reporting query of about 1 KB: joins, a CTE,
// a view, a function, aggregates and predicates.
var statement1KB = strings.TrimSpace(`
WITH recent AS (
	SELECT o.user_id, sum(o.total) AS spent, count(*) AS n, max(o.id) AS last_order
	  FROM orders o
	 WHERE o.total > $1 AND o.id > $2
	 GROUP BY o.user_id
	HAVING count(*) > $3
)
SELECT u.id, lower(u.email) AS contact, u.username, r.spent, r.n,
       CASE WHEN u.created_at > now() - interval '30 days' THEN 'new' ELSE 'old' END AS cohort,
       (SELECT count(*) FROM backup b WHERE b.email = u.email) AS backups,
       coalesce(e.email, u.email) AS primary_email,
       exists(SELECT 1 FROM orders o2 WHERE o2.user_id = u.id AND o2.total > $4) AS big_spender
  FROM users u
  JOIN recent r ON r.user_id = u.id
  LEFT JOIN user_emails e ON e.id = u.id
  LEFT JOIN LATERAL (SELECT o3.id FROM orders o3 WHERE o3.user_id = u.id ORDER BY o3.id DESC LIMIT 1) l ON true
 WHERE u.password_hash IS NOT NULL
   AND u.username NOT IN (SELECT note FROM backup WHERE note IS NOT NULL)
   AND u.id BETWEEN $5 AND $6
 ORDER BY r.spent DESC, u.id
 LIMIT $7 OFFSET $8`)

func BenchmarkClassifyUncached1KB(b *testing.B) {
	snap := testSnapshot(b)
	b.SetBytes(int64(len(statement1KB)))
	b.ReportAllocs()
	for b.Loop() {
		Classify(statement1KB, snap, defaultPath, "app")
	}
}

func BenchmarkClassifyCached1KB(b *testing.B) {
	snap := testSnapshot(b)
	c := NewCache(1024)
	c.Classify(statement1KB, snap, defaultPath, "app")
	b.ReportAllocs()
	for b.Loop() {
		c.Classify(statement1KB, snap, defaultPath, "app")
	}
}

func BenchmarkClassifyCachedParallel(b *testing.B) {
	snap := testSnapshot(b)
	c := NewCache(1024)
	c.Classify(statement1KB, snap, defaultPath, "app")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Classify(statement1KB, snap, defaultPath, "app")
		}
	})
}
