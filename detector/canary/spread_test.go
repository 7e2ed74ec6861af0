package canary_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// newMembers makes public.members as an application's users table looks after a few
// years: an identity key with gaps (deleted accounts), addresses across the alphabet,
// creation times growing with the key, an updated_at, a soft-delete column.
func newMembers(t *testing.T, key string, analyze bool) *pgtest.Database {
	t.Helper()
	db := pgtest.NewDatabase(t)
	keyColumn := `id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY`
	keyValue := ``
	if key == "uuid7" {
		keyColumn = `id uuid PRIMARY KEY`
		// A version 7 uuid of the row's creation time.
		keyValue = `overlay(overlay(overlay(md5(g::text) placing lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') FROM 1)
			placing '7' FROM 13) placing '8' FROM 17)::uuid,`
	}
	cols := `email, username, password_hash, created_at, updated_at`
	if keyValue != "" {
		cols = `id, ` + cols
	}
	db.Exec(t, `CREATE TABLE public.members (
			`+keyColumn+`,
			email text NOT NULL UNIQUE,
			username text NOT NULL,
			password_hash text NOT NULL,
			created_at timestamptz NOT NULL DEFAULT now(),
			updated_at timestamptz NOT NULL DEFAULT now(),
			deleted_at timestamptz);
		INSERT INTO public.members (`+cols+`)
		SELECT `+keyValue+` e || '@example.com', e, '$2a$04$' || rpad(md5(g::text), 53, 'x'), ts, ts + interval '3 days'
		FROM generate_series(1, 4000) g,
			LATERAL (SELECT timestamptz '2021-01-01 00:00:00+00' + g * interval '6 hours' AS ts) t,
			LATERAL (SELECT (ARRAY['adam','beth','carl','dora','eric','fay','gus','hana','igor','jane','kurt','lena','max',
				'nina','otto','pia','quinn','ralf','sue','tim','uwe','val','walt','xena','yves','zack'])[1 + g % 26]
				|| '.' || (ARRAY['smith','jones','brown','lee','wong','klein','roth','berg'])[1 + (g / 26) % 8] || g AS e) n;
		DELETE FROM public.members WHERE (extract(epoch FROM created_at)::bigint / 21600) % 10 = 3`)
	if analyze {
		db.Exec(t, `ANALYZE public.members`)
	}
	return db
}

// rank is the position of value among the real rows of members in column's order
// (column of type typ): 0 before all, 1 after all.
func rank(t *testing.T, conn *pgx.Conn, column, typ, value string) float64 {
	t.Helper()
	var r float64
	if err := conn.QueryRow(t.Context(), fmt.Sprintf(`SELECT count(*) FILTER (WHERE %s < $1::%s)::float8 / count(*)
		FROM public.members WHERE email NOT LIKE '%%@%s'`, column, typ, domain), value).Scan(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCanariesSpreadAcrossTheTable is the planting half of #15's canary precision: each
// of n canaries sits in its own n-th of the table in key order and in address order, so
// that a sweep in either order meets one early, and carries a real row's timestamps, so
// that a "newest members" page does not show it.
func TestCanariesSpreadAcrossTheTable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		key     string
		analyze bool
	}{
		{"identity key, statistics", "identity", true},
		{"identity key, no statistics yet", "identity", false},
		{"uuid version 7 key", "uuid7", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 4
			db := newMembers(t, tc.key, tc.analyze)
			super := db.Conn(t, "postgres")
			ctx := t.Context()
			p, err := canary.Plant(ctx, super, canary.Options{Table: "public.members", Count: n, Domain: domain})
			if err != nil {
				t.Fatal(err)
			}
			var keyRanks, emailRanks []float64
			for _, c := range p.Canaries {
				var email, created, updated string
				var deleted *time.Time
				var createdAt time.Time
				if err := super.QueryRow(ctx, `SELECT email, created_at::text, updated_at::text, created_at, deleted_at
					FROM public.members WHERE id::text = $1`, c.Key).Scan(&email, &created, &updated, &createdAt, &deleted); err != nil {
					t.Fatal(err)
				}
				// The key's and the address's places among the real rows.
				keyType := "bigint"
				if tc.key == "uuid7" {
					keyType = "uuid"
				}
				keyRanks = append(keyRanks, rank(t, super, "id", keyType, c.Key))
				emailRanks = append(emailRanks, rank(t, super, "email", "text", email))

				// A real row's times: the past, consistent, not the planting time.
				if time.Since(createdAt) < 24*time.Hour || updated < created || deleted != nil {
					t.Errorf("canary %s: created %s, updated %s, deleted %v; want a real row's past times, not deleted",
						c.ID, created, updated, deleted)
				}
			}
			slices.Sort(keyRanks)
			slices.Sort(emailRanks)
			for i := range n {
				// Keys leave the newest 5 % of the range to real rows.
				lo, hi := 0.95*float64(i)/n-0.02, 0.95*float64(i+1)/n+0.02
				if keyRanks[i] < lo || keyRanks[i] > hi {
					t.Errorf("key ranks %v: the %d-th is outside [%.2f, %.2f]", keyRanks, i, lo, hi)
				}
				lo, hi = float64(i)/n-0.02, float64(i+1)/n+0.02
				if emailRanks[i] < lo || emailRanks[i] > hi {
					t.Errorf("address ranks %v: the %d-th is outside [%.2f, %.2f]", emailRanks, i, lo, hi)
				}
			}

			// The newest members, by key or by creation, are all real.
			for _, order := range []string{"id DESC", "created_at DESC", "updated_at DESC"} {
				var canaries int
				if err := super.QueryRow(ctx, `SELECT count(*) FROM (SELECT email FROM public.members ORDER BY `+order+` LIMIT 50) m
					WHERE email LIKE '%@`+domain+`'`).Scan(&canaries); err != nil {
					t.Fatal(err)
				}
				if canaries > 0 {
					t.Errorf("the 50 newest members by %s include %d canaries", order, canaries)
				}
			}

			// New members still get keys (the identity never hands out a canary's);
			// planting again adds one more; Remove takes every canary out.
			if tc.key == "identity" {
				db.Exec(t, `INSERT INTO public.members (email, username, password_hash)
					SELECT 'new' || g || '@example.com', 'new' || g, 'h' FROM generate_series(1, 4000) g`)
			}
			if _, err := canary.Plant(ctx, super, canary.Options{Table: "public.members", Count: 1, Domain: domain}); err != nil {
				t.Fatalf("second Plant: %v", err)
			}
			rm, err := canary.Remove(ctx, super, "public.members")
			if err != nil || rm.Rows != n+1 {
				t.Fatalf("Remove: got %+v, %v; want %d rows deleted", rm, err, n+1)
			}
			if got := scalar[int64](t, super, `SELECT count(*) FROM public.members WHERE email LIKE '%@`+domain+`'`); got != 0 {
				t.Errorf("%d canaries left after Remove", got)
			}
		})
	}
}
