package canary_test

import (
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkCanary is acceptance 3: the cost of the canary policy for a role subject to
// row security, on a 200,000-row table, against an identical table without it. Each
// iteration runs the same statement on both tables, interleaved so that the noise of a
// shared machine falls on both; the metrics are the mean latencies and their ratio
// (without/with: 1 means no cost, 0.5 twice as slow).
//
//	make bench-canary
func BenchmarkCanary(b *testing.B) {
	const rows = 200_000
	db := newUsers(b, rows)
	plant(b, db, 3)
	db.Exec(b, `CREATE TABLE public.users_plain (LIKE public.users INCLUDING ALL);
		INSERT INTO public.users_plain SELECT * FROM public.users;
		GRANT SELECT ON public.users_plain TO `+reader)
	super := db.Conn(b, "postgres")
	for _, sql := range []string{`VACUUM ANALYZE public.users`, `VACUUM ANALYZE public.users_plain`} {
		if _, err := super.Exec(b.Context(), sql); err != nil {
			b.Fatal(err)
		}
	}
	conn := db.Conn(b, reader)
	ctx := b.Context()

	run := func(b *testing.B, query func(table string, i int) error) {
		var with, without time.Duration
		for i := 0; b.Loop(); i++ {
			order := []string{"public.users_plain", "public.users"}
			if i%2 == 1 {
				order[0], order[1] = order[1], order[0]
			}
			for _, table := range order {
				start := time.Now()
				if err := query(table, i); err != nil {
					b.Fatal(err)
				}
				if table == "public.users" {
					with += time.Since(start)
				} else {
					without += time.Since(start)
				}
			}
		}
		n := float64(b.N)
		b.ReportMetric(float64(without.Microseconds())/n, "µs-without/op")
		b.ReportMetric(float64(with.Microseconds())/n, "µs-with/op")
		b.ReportMetric(float64(without)/float64(with), "ratio")
	}

	b.Run("PointLookup", func(b *testing.B) {
		rng := rand.New(rand.NewPCG(1, 2))
		run(b, func(table string, _ int) error {
			var email, hash string
			return conn.QueryRow(ctx, `SELECT email, password_hash FROM `+table+` WHERE id = $1`,
				rng.Int64N(rows)+1).Scan(&email, &hash)
		})
	})
	b.Run("FullScan", func(b *testing.B) {
		run(b, func(table string, _ int) error {
			var n int64
			return conn.QueryRow(ctx, `SELECT count(email) FROM `+table).Scan(&n)
		})
	})
}
