package evidence

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// BenchmarkCapture is the server's part of one alert's evidence: the role's sessions
// (ten connected), the statement counters and the privileges, on one connection, as
// the capturer asks them. It is what delays the automatic response after a canary
// read, and what an alert storm costs the server per alert.
func BenchmarkCapture(b *testing.B) {
	db := pgtest.NewDatabase(b)
	role := db.Name + "_reader"
	db.CreateRole(b, role)
	db.Exec(b, fmt.Sprintf(`CREATE TABLE public.users (id int PRIMARY KEY, email text, password_hash text);
		GRANT SELECT ON public.users TO %s`, role))
	for range 10 {
		if _, err := db.Conn(b, role).Exec(b.Context(), `SELECT email FROM users WHERE id = 1`); err != nil {
			b.Fatal(err)
		}
	}
	conn := db.Conn(b, "postgres")
	in := Input{
		Alert: model.Alert{Fingerprint: "0123456789abcdef", Rule: "SensitiveBulkRead", Time: time.Now(), Labels: map[string]string{
			model.LabelRole: role, model.LabelTable: "public.users", model.LabelDatabase: db.Name}},
		Trigger: &model.Event{Source: "statements", Role: role, QueryID: 1, Statement: "SELECT email FROM users WHERE id = $1"},
	}
	b.ResetTimer()
	for b.Loop() {
		e := New(in, time.Now())
		Capture(context.Background(), conn, e)
		if e.Privileges == nil || len(e.Sessions) != 10 {
			b.Fatalf("got %d sessions, privileges %+v, problems %q", len(e.Sessions), e.Privileges, e.Problems)
		}
	}
}
