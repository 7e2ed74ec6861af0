package canary_test

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// BenchmarkCanary is acceptance 3: the cost of the canary policy for a role subject to
// row security, on a 200,000-row table, against an identical table without it: a point
// lookup (the function is never called), a read of the three canary rows (it is, three
// times), a full scan. Each
// iteration runs the same statement on both tables, interleaved so that the noise of a
// shared machine falls on both; the metrics are the mean latencies and their ratio
// (without/with: 1 means no cost, 0.5 twice as slow).
//
//	make bench-canary
func BenchmarkCanary(b *testing.B) {
	const rows = 200_000
	db := newUsers(b, rows)
	planted := plant(b, db, 3)
	keys := make([]int64, len(planted.Canaries))
	for i, c := range planted.Canaries {
		k, err := strconv.ParseInt(c.Key, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = k
	}
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
	// The canary rows themselves: each call runs the canary function three times and
	// emits three messages, the whole cost of a visit (the statement's text included).
	b.Run("CanaryRows", func(b *testing.B) {
		run(b, func(table string, _ int) error {
			rows, err := conn.Query(ctx, `SELECT email FROM `+table+` WHERE id = ANY($1)`, keys)
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		})
	})
	b.Run("FullScan", func(b *testing.B) {
		run(b, func(table string, _ int) error {
			var n int64
			return conn.QueryRow(ctx, `SELECT count(email) FROM `+table).Scan(&n)
		})
	})
}
