package doctor_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/doctor"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestRoleWithoutRights: a plain login role that can read the sensitive table but
// not the statistics, without REPLICATION, is told exactly what to grant and revoke.
func TestRoleWithoutRights(t *testing.T) {
	db := pgtest.NewDatabase(t)
	role := "doc_plain_" + db.Name[len(db.Name)-3:]
	db.CreateRole(t, role)
	db.Exec(t, `CREATE TABLE public.users (id int, email text);
		GRANT SELECT ON public.users TO `+role)
	table, err := config.NewSensitiveTable("public.users", "email")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := doctor.Run(t.Context(), db.Conn(t, role), doctor.Options{
		Tables: []config.SensitiveTable{table, mustTable(t, "public.missing")}, WAL: true, Slot: db.Name, Publication: "nope",
	})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := rep.Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	if !rep.Failed() {
		t.Error("Failed() is false")
	}
	for _, want := range []string{
		"✗ role " + role + " statistics: not a member of pg_read_all_stats",
		"fix: as a superuser: GRANT pg_monitor TO " + role + ";",
		"✗ role " + role + " replication: no REPLICATION",
		"fix: as a superuser: ALTER ROLE " + role + " REPLICATION;",
		"! table public.users: the detector's role can SELECT it",
		"fix: REVOKE SELECT ON public.users FROM " + role + ";",
		"✗ table public.missing: does not exist",
		"✗ slot " + db.Name + ": missing",
		"✗ publication nope: missing",
		"! DDL event triggers: 0 of 3",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func mustTable(t *testing.T, name string) config.SensitiveTable {
	t.Helper()
	st, err := config.NewSensitiveTable(name, "email")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestWALAutoWithoutSetup: with sources.wal.enabled auto (the default), what the WAL
// source lacks makes it off, not the detector broken: warnings that say so, with the
// fix, and no failure because of them.
func TestWALAutoWithoutSetup(t *testing.T) {
	db := pgtest.NewDatabase(t)
	role := "doc_auto_" + db.Name[len(db.Name)-3:]
	db.CreateRole(t, role)
	db.Exec(t, `CREATE TABLE public.users (id int, email text); GRANT pg_monitor TO `+role)
	rep, err := doctor.Run(t.Context(), db.Conn(t, role), doctor.Options{
		Tables: []config.SensitiveTable{mustTable(t, "public.users")}, WAL: true, WALAuto: true,
		Slot: db.Name, Publication: "nope",
	})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := rep.Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	const off = "sources.wal.enabled is auto, so the WAL source is off"
	for _, want := range []string{
		"! role " + role + " replication: no REPLICATION: " + off,
		"! slot " + db.Name + ": missing: " + off,
		"! publication nope: missing: " + off,
		"fix: pgtripwire setup --config FILE --apply",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, failure := range []string{"✗ slot", "✗ publication", "✗ role " + role + " replication"} {
		if strings.Contains(out, failure) {
			t.Errorf("auto: got a failure %q for what the WAL source lacks, want a warning", failure)
		}
	}
}
