package statements

import (
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
)

// Reads made while the detector was down are counted after its restart, from the
// counters it kept; counters too old (or of a reset pg_stat_statements) are not used,
// and the first poll is a baseline again.
func TestReadsWhileStoppedAreCountedAfterARestart(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seed(t, db, 2000, "resume_mallory")
	stateDir := t.TempDir()
	reader := db.Conn(t, "resume_mallory")
	opts := sourceOptions{dsn: db.SuperuserDSN(), interval: 100 * time.Millisecond, stateDir: stateDir}

	t.Run("first run", func(t *testing.T) {
		st := startSourceWith(t, &sourcetest.Recorder{}, opts)
		query(t, reader, `SELECT email, password_hash FROM users`)
		sourcetest.Eventually(t, 5*time.Second, "the read before the stop", func() bool {
			rows, _ := st.rows("resume_mallory", "public.users")
			return rows == 2000
		})
	}) // the source stops here, writing its counters

	query(t, reader, `SELECT email, password_hash FROM users WHERE id <= 1500`) // while stopped

	t.Run("restart", func(t *testing.T) {
		st := startSourceWith(t, &sourcetest.Recorder{}, opts)
		sourcetest.Eventually(t, 5*time.Second, "the read made while stopped", func() bool {
			rows, _ := st.rows("resume_mallory", "public.users")
			return rows >= 1500
		})
		time.Sleep(300 * time.Millisecond)
		if rows, events := st.rows("resume_mallory", "public.users"); rows != 1500 {
			t.Errorf("after the restart: %d rows in %v, want the 1,500 read while stopped, and only them", rows, events)
		}
	})

	query(t, reader, `SELECT email FROM users WHERE id <= 700`) // while stopped, long ago
	t.Run("restart after too long", func(t *testing.T) {
		opts := opts
		opts.now = func() time.Time { return time.Now().Add(maxResumeAge + time.Minute) }
		st := startSourceWith(t, &sourcetest.Recorder{}, opts)
		time.Sleep(500 * time.Millisecond)
		if rows, events := st.rows("resume_mallory", "public.users"); rows != 0 {
			t.Errorf("after a long outage: %d rows in %v, want a fresh baseline", rows, events)
		}
	})
}
