package detector_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/workload"
	"github.com/pgtripwire/pgtripwire/model"
)

// The dumps that do not look like dumps (issue #15): each extraction method below, run
// by a role of its own against a table of 20,000 users while the application's benign
// traffic runs alongside (logins by unique email at 200/s, signups, one-by-one resets,
// an admin browsing 50 per page, a dashboard's count(*)), pages naming that role —
// within 10 s, or 30 s for a sweep — and the benign traffic raises nothing.
func TestDumpsThatDoNotLookLikeDumps(t *testing.T) {
	t.Parallel()
	const users = 20_000
	db := pgtest.NewDatabase(t)
	workload.Users(t, db, users)
	cfg := detectortest.Config(t, db)
	cfg.Roles.Application = []string{"webapp"}
	d := detectortest.Start(t, cfg)
	workload.Benign(t, db, users)

	for _, tc := range []struct {
		name, role string
		read       func(t *testing.T, role string)
		rule       string
		within     time.Duration
	}{
		{"a whole table folded into one value", "folder", func(t *testing.T, role string) {
			workload.Drain(t, workload.Reader(t, db, role), `SELECT string_agg(email || ':' || password_hash, ',') FROM users`)
		}, "SensitiveBulkRead", 10 * time.Second},
		{"the same fold inside COPY (…) TO STDOUT", "copyfolder", func(t *testing.T, role string) {
			conn := workload.Reader(t, db, role)
			if _, err := conn.PgConn().CopyTo(t.Context(), discard{},
				`COPY (SELECT json_agg(json_build_object('e', email, 'h', password_hash)) FROM users) TO STDOUT`); err != nil {
				t.Fatal(err)
			}
		}, "SensitiveBulkRead", 10 * time.Second},
		{"keyset pages of 40 rows as fast as the client goes", "pager", func(t *testing.T, role string) {
			conn := workload.Reader(t, db, role)
			for last := 0; ; {
				var ids []int
				rows, err := conn.Query(t.Context(), `SELECT id, email, password_hash FROM users WHERE id > $1 ORDER BY id LIMIT 40`, last)
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var id int
					var email, hash string
					if err := rows.Scan(&id, &email, &hash); err != nil {
						t.Fatal(err)
					}
					ids = append(ids, id)
				}
				if err := rows.Err(); err != nil || len(ids) == 0 || last >= users {
					return
				}
				last = slices.Max(ids)
			}
		}, "SensitiveSweep", 30 * time.Second},
		{"the credential columns split over statements and ranges", "splitter", func(t *testing.T, role string) {
			conn := workload.Reader(t, db, role)
			for from := 1; from <= users; from += 900 {
				workload.Drain(t, conn, `SELECT id, email FROM users WHERE id BETWEEN $1 AND $2`, from, from+899)
				workload.Drain(t, conn, `SELECT id, password_hash FROM users WHERE id >= $1 AND id < $2`, from, from+900)
			}
		}, "SensitiveSweep", 30 * time.Second},
		{"dynamic SQL in a DO block, values leaving through RAISE NOTICE", "dynamic", func(t *testing.T, role string) {
			conn := workload.Reader(t, db, role)
			if _, err := conn.Exec(t.Context(), `DO $$
				DECLARE r record; t text := 'us' || 'ers'; c text := 'pass' || 'word_h' || 'ash';
				BEGIN
					FOR r IN EXECUTE format('SELECT %I AS e, %I AS h FROM public.%I', 'em' || 'ail', c, t) LOOP
						RAISE NOTICE '%:%', r.e, r.h;
					END LOOP;
				END $$`); err != nil {
				t.Fatal(err)
			}
		}, "SensitiveBulkRead", 10 * time.Second},
		{"catalog reconnaissance by the application's role", "webapp", func(t *testing.T, role string) {
			db.CreateRole(t, role)
			conn := db.Conn(t, role)
			workload.Drain(t, conn, `SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns
				WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2`)
			workload.Drain(t, conn, `SELECT rolname, rolsuper, rolcanlogin FROM pg_roles`)
		}, "CatalogReconnaissance", 10 * time.Second},
		{"a table written to a server-side file", "exporter", func(t *testing.T, role string) {
			db.CreateRole(t, role)
			db.Exec(t, fmt.Sprintf(`GRANT SELECT ON public.users TO %s; GRANT pg_write_server_files TO %[1]s`, role))
			if _, err := db.Conn(t, role).Exec(t.Context(),
				fmt.Sprintf(`COPY (SELECT id FROM users) TO '/tmp/pgtripwire-%s.csv'`, db.Name)); err != nil {
				t.Fatal(err)
			}
		}, "ServerSideFileAccess", 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			tc.read(t, tc.role)
			a := d.WaitAlert(t, tc.within, tc.rule, map[string]string{model.LabelRole: tc.role})
			t.Logf("%s paged %s after the read ended (%s, value %v)", tc.rule, time.Since(start).Round(10*time.Millisecond),
				a.Labels, a.Value)
		})
	}

	for _, a := range d.Lines(t) {
		if slices.Contains(workload.BenignRoles, a.Labels[model.LabelRole]) {
			t.Errorf("the benign traffic raised %s: %v", a.Rule, a.Labels)
		}
	}
}

// discard is a COPY client that keeps nothing.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
