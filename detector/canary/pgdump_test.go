package canary_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// TestPgDumpByReader checks what docs/canary.md says of pg_dump run by a role subject
// to row security: it refuses the table by default, and trips the canary with
// --enable-row-security.
func TestPgDumpByReader(t *testing.T) {
	dump := pgtest.Program(t, pgtest.Shared(t), "pg_dump")
	db := newUsers(t, 20)
	msgs := newMessages(t, db)
	db.Exec(t, `GRANT SELECT ON SEQUENCE public.users_id_seq TO `+reader)
	plant(t, db, 1)
	startSource(t, db)
	msgs.until()

	out, err := exec.Command(dump, "--data-only", "--table", "public.users", db.DSN(reader)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "row-level security") {
		t.Errorf("pg_dump without --enable-row-security: got %v\n%s\nwant a refusal naming row-level security", err, out)
	}
	out, err = exec.Command(dump, "--data-only", "--enable-row-security", "--table", "public.users", db.DSN(reader)).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_dump --enable-row-security: %v\n%s", err, out)
	}
	if got := msgs.until(); len(got) == 0 || got[0].Role != reader {
		t.Errorf("pg_dump --enable-row-security: got canary events%s, want one by %s", describe(got), reader)
	}
}
