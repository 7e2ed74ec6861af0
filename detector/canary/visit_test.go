package canary_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

var usersSensitive = map[string][]string{"public.users": {"email", "password_hash", "username"}}

// runClassifier runs a Classifier on db's catalog, as role, until the test ends.
func runClassifier(t *testing.T, db *pgtest.Database, role string, sensitive map[string][]string, wait time.Duration) *canary.Classifier {
	t.Helper()
	cc, err := pgx.ParseConfig(db.DSN(role))
	if err != nil {
		t.Fatal(err)
	}
	c := canary.NewClassifier(canary.ClassifierConfig{Conn: cc, Sensitive: sensitive, SearchPath: []string{"$user", "public"},
		Wait: wait, ReconnectInitial: 50 * time.Millisecond, ReconnectMax: 100 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: got %v, want context.Canceled", err)
		}
	})
	return c
}

// judge decodes a canary message reporting a visit by statement and finishes it, as
// the WAL source does.
func judge(t *testing.T, c *canary.Classifier, statement string) model.Event {
	t.Helper()
	ev, finish, ok := c.Decode(canary.MessagePrefix, []byte(visitMessage(statement, false, 0)), false)
	if !ok || finish == nil {
		t.Fatalf("got ok %v, finish %v; want a visit to classify", ok, finish != nil)
	}
	return finish(t.Context(), ev)
}

// pages is what the default pack's CanaryRowRead pages on (rules/default.yml).
func pages(ev model.Event) bool { return !ev.Complete || len(ev.SensitiveRead) > 0 }

// TestClassifierVerdicts is the unit of acceptance 2 with a real catalog: statements
// that pass over every row without returning a sensitive value are cleared; those
// that return one, or cannot be judged, are not.
func TestClassifierVerdicts(t *testing.T) {
	db := newUsers(t, 10)
	db.Exec(t, `CREATE INDEX ON public.users (lower(email));
		CREATE VIEW public.user_list AS SELECT id, created_at FROM public.users;
		CREATE TABLE public.notes (id int, body text)`)
	c := runClassifier(t, db, "postgres", usersSensitive, 5*time.Second)
	for _, tc := range []struct {
		name, statement  string
		read, referenced []string
		complete         bool
	}{
		{"dashboard count", `SELECT count(*) FROM users`, nil, nil, true},
		{"listing sorted by an unindexed column", `SELECT id, created_at FROM users ORDER BY active DESC, created_at LIMIT 50`, nil, nil, true},
		{"lookup by lower(email)", `SELECT id FROM public.users WHERE lower(email) = lower('Ann@example.com')`, nil, []string{"email"}, true},
		{"through a view without sensitive columns", `SELECT * FROM user_list`, nil, nil, true},
		{"count of a sensitive column", `SELECT count(email) FROM users`, nil, []string{"email"}, true},
		{"full read", `SELECT email, password_hash FROM users`, []string{"email", "password_hash"}, nil, true},
		{"star", `SELECT * FROM users`, []string{"email", "password_hash", "username"}, nil, true},
		{"copy", `COPY users TO STDOUT`, []string{"email", "password_hash", "username"}, nil, true},
		{"folded aggregate", `SELECT string_agg(email, ',') FROM users`, []string{"email"}, nil, true},
		{"declared cursor", `DECLARE c CURSOR FOR SELECT email FROM users`, []string{"email"}, nil, true},
		{"copied into a table", `CREATE TABLE loot AS SELECT email FROM users`, []string{"email"}, nil, true},
		{"explain analyze", `EXPLAIN ANALYZE SELECT email FROM users`, nil, []string{"email"}, true},
		{"cursor fetch", `FETCH ALL FROM c`, nil, nil, false},
		{"dynamic SQL", `DO $$BEGIN PERFORM count(*) FROM users; END$$`, nil, nil, false},
		{"several statements", `SELECT count(*) FROM users; SELECT username FROM users`, []string{"username"}, nil, true},
		{"unparsable", `SELECT count(*) FROM users WHERE`, nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := judge(t, c, tc.statement)
			if !slices.Equal(got.SensitiveRead, tc.read) || !slices.Equal(got.SensitiveReferenced, tc.referenced) || got.Complete != tc.complete {
				t.Errorf("got read %v, referenced %v, complete %v; want %v, %v, %v",
					got.SensitiveRead, got.SensitiveReferenced, got.Complete, tc.read, tc.referenced, tc.complete)
			}
			if got.Kind != canary.KindRead || got.Relation != "public.users" || got.Role != "mallory" || got.PID != 4242 {
				t.Errorf("got %+v, want the visit's canary_read with its session", got)
			}
			if strings.Contains(got.Statement, "Ann@example.com") || got.Statement == "" {
				t.Errorf("statement: got %q, want it redacted", got.Statement)
			}
		})
	}
}

// TestClassifierSeesTheCatalogAsOfTheVisit: a view redefined just before a read through
// it is judged by its new definition, not by the snapshot the classifier held.
func TestClassifierSeesTheCatalogAsOfTheVisit(t *testing.T) {
	db := newUsers(t, 10)
	db.Exec(t, `CREATE VIEW public.user_list AS SELECT id, created_at FROM public.users`)
	c := runClassifier(t, db, "postgres", usersSensitive, 5*time.Second)
	if got := judge(t, c, `SELECT * FROM user_list`); pages(got) {
		t.Fatalf("before: got %+v, want the visit cleared", got)
	}
	db.Exec(t, `CREATE OR REPLACE VIEW public.user_list AS SELECT id, created_at, password_hash FROM public.users`)
	if got := judge(t, c, `SELECT * FROM user_list`); !slices.Equal(got.SensitiveRead, []string{"password_hash"}) || !got.Complete {
		t.Errorf("after the view changed: got read %v, complete %v; want password_hash read", got.SensitiveRead, got.Complete)
	}
}

// TestClassifierFailsClosed: when the canary's table is not configured as sensitive,
// or the catalog cannot be read, a visit is unclassified (and pages), at once.
func TestClassifierFailsClosed(t *testing.T) {
	db := newUsers(t, 10)

	t.Run("table not configured", func(t *testing.T) {
		c := runClassifier(t, db, "postgres", map[string][]string{"public.accounts": {"email"}}, 5*time.Second)
		if got := judge(t, c, `SELECT count(*) FROM users`); got.Complete {
			t.Errorf("got %+v, want an unclassified visit", got)
		}
	})
	t.Run("catalog cannot be read", func(t *testing.T) {
		const nologin = "canary_nologin"
		db.Exec(t, `CREATE ROLE `+nologin+` NOLOGIN`)
		c := runClassifier(t, db, nologin, usersSensitive, 5*time.Second)
		start := time.Now()
		got := judge(t, c, `SELECT count(*) FROM users`)
		if got.Complete || got.Statement != "SELECT count(*) FROM users" {
			t.Errorf("got %+v, want an unclassified visit with its redacted statement", got)
		}
		if waited := time.Since(start); waited > 3*time.Second {
			t.Errorf("waited %v for a catalog that cannot be loaded, want the failure to answer at once", waited)
		}
	})
}
