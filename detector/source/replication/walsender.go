package replication

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/model"
)

// walsender is one walsender as the detector's role sees it at one poll.
type walsender struct {
	pid int32
	// started is its backend_start, zero when hidden: with pid, it tells a new
	// walsender from an old one whose pid was reused.
	started     time.Time
	role        string
	application string
	// addr is the client's address, "local" for a Unix socket, "" when hidden.
	addr string
	// visible tells that the role sees its client, state and start: it has the
	// privileges of pg_read_all_stats, or the walsender runs as the role itself.
	visible bool
	// state is pg_stat_replication.state (startup, catchup, streaming, backup,
	// stopping); "" when hidden.
	state string
	// database is the database of a database replication connection
	// (replication=database, what logical clients use); "" for a physical one.
	database string
	// slot, slotType and slotDatabase describe the slot it holds, if any.
	slot, slotType, slotDatabase string
	// backup tells that it runs a base backup (pg_stat_progress_basebackup lists it),
	// which every role sees, state hidden or not.
	backup bool
}

// walsendersQuery lists every walsender: those pg_stat_activity calls walsenders, and,
// for a role that cannot see their backend type, those pg_stat_get_wal_senders lists
// (that function shows such a role nothing but the pid). Every role sees a walsender's
// pid, role, application_name and database, the slot it holds and whether it runs a base
// backup; only pg_read_all_stats (part of pg_monitor) or the walsender's own role sees
// its client address, start time and state. The query text is never read: a
// replication connection may run SQL, literals included.
const walsendersQuery = `WITH w AS (SELECT pid, state FROM pg_stat_get_wal_senders())
SELECT a.pid, a.backend_start, coalesce(a.usename::text, ''), coalesce(a.application_name, ''),
  coalesce(host(a.client_addr), CASE a.client_port WHEN -1 THEN 'local' END, ''),
  a.backend_type IS NOT NULL, coalesce(w.state, ''), coalesce(a.datname::text, ''),
  coalesce(s.slot_name::text, ''), coalesce(s.slot_type, ''), coalesce(s.database::text, ''),
  EXISTS (SELECT FROM pg_stat_progress_basebackup b WHERE b.pid = a.pid)
FROM pg_stat_activity a
LEFT JOIN w ON w.pid = a.pid
LEFT JOIN pg_replication_slots s ON s.active_pid = a.pid
WHERE a.backend_type = 'walsender' OR a.pid IN (SELECT pid FROM w)
ORDER BY a.pid`

// privilegeQuery tells whether the role sees every walsender's client and state.
const privilegeQuery = `SELECT pg_has_role('pg_read_all_stats', 'USAGE')`

// read lists the walsenders, in one round trip.
func read(ctx context.Context, conn *pgx.Conn) (privileged bool, senders []walsender, err error) {
	b := &pgx.Batch{}
	b.Queue(privilegeQuery).QueryRow(func(row pgx.Row) error { return row.Scan(&privileged) })
	b.Queue(walsendersQuery).Query(func(rows pgx.Rows) error {
		var w walsender
		var started *time.Time
		_, err := pgx.ForEachRow(rows, []any{&w.pid, &started, &w.role, &w.application, &w.addr, &w.visible,
			&w.state, &w.database, &w.slot, &w.slotType, &w.slotDatabase, &w.backup}, func() error {
			w.started = time.Time{}
			if started != nil {
				w.started = *started
			}
			senders = append(senders, w)
			return nil
		})
		return err
	})
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return false, nil, fmt.Errorf("read walsenders: %w", err)
	}
	return privileged, senders, nil
}

// operation is what w does as far as this poll shows, "" when it has not started
// anything yet (a connection in state startup, holding no slot).
func (w walsender) operation() string {
	switch {
	case w.backup || w.state == "backup":
		return OpBackup
	case w.slotType == "logical":
		return OpLogical
	case w.slotType == "physical", w.state == "catchup", w.state == "streaming", w.state == "stopping":
		// A logical stream always holds its slot: streaming without one is physical.
		return OpPhysical
	}
	return ""
}

// mode is the kind of replication connection w is, for a walsender that never showed
// what it does: a database replication connection is a logical one.
func (w walsender) mode() string {
	if w.database != "" {
		return OpLogical
	}
	return OpPhysical
}

// client identifies who opened w, to tell the WAL stream pg_basebackup opens beside its
// backup.
func (w walsender) client() [3]string { return [3]string{w.role, w.addr, w.application} }

// verdict is what the source makes of a walsender.
type verdict uint8

const (
	// verdictPending: not judged yet. A walsender that has not shown what it does is
	// judged at the next poll (or when it is gone), so that pg_basebackup caught
	// between connecting and BASE_BACKUP is reported as a backup.
	verdictPending verdict = iota
	verdictOwn
	verdictAllowed
	// verdictElsewhere: a logical stream of another database, which the detector of
	// that database judges.
	verdictElsewhere
	verdictUnexpected
)

var verdictNames = [...]string{"pending", "own", "allowed", "other_database", "unexpected"}

func (v verdict) String() string { return verdictNames[v] }

// tracked is what the source remembers of one walsender.
type tracked struct {
	last    walsender
	verdict verdict
	// operation is what it was judged to do.
	operation string
}

// judged is one walsender judged at a poll.
type judged struct {
	w         walsender
	verdict   verdict
	operation string
}

// event returns the event reporting j.
func (j judged) event(now time.Time) model.Event {
	ev := model.Event{Time: now, Source: Name, Kind: KindUnexpected, Operation: j.operation,
		Role: j.w.role, ClientAddr: j.w.addr, Application: j.w.application, PID: j.w.pid,
		Object: j.w.slot, Complete: j.w.visible}
	if j.operation == OpLogical {
		ev.Database = j.w.logicalDatabase()
	}
	return ev
}

// logicalDatabase is the database a logical walsender decodes: its slot's, or the
// database it is connected to before it holds one.
func (w walsender) logicalDatabase() string {
	if w.slotDatabase != "" {
		return w.slotDatabase
	}
	return w.database
}

// judge decides about walsenders, poll after poll.
type judge struct {
	cfg Config
	// database is the monitored database; databases, when set, every database of the
	// server the detector watches (the connection's need not be one of them).
	database  string
	databases []string
	// seen holds every walsender of the last accepted poll, by pid.
	seen map[int32]tracked
}

// watches reports whether the detector watches database (its logical streams are
// this source's to judge).
func (j *judge) watches(database string) bool {
	if j.databases != nil {
		return slices.Contains(j.databases, database)
	}
	return database == j.database
}

// poll judges the walsenders of one poll: those seen for the first time, those that
// were pending, and pending ones that are gone (judged on what was last seen of them).
// It returns the walsenders judged at this poll, in pid order then gone ones, and what
// to remember once they are handed over; j itself does not change.
func (j *judge) poll(senders []walsender) ([]judged, map[int32]tracked) {
	backups := map[[3]string]bool{}
	for _, w := range senders {
		if w.operation() == OpBackup {
			backups[w.client()] = true
		}
	}
	next := make(map[int32]tracked, len(senders))
	var out []judged
	for _, w := range senders {
		t, known := j.seen[w.pid]
		if known && !t.last.started.Equal(w.started) {
			known = false // the pid was reused
		}
		if known && t.verdict != verdictPending && !slotChanged(t, w) {
			t.last = w
			next[w.pid] = t
			continue
		}
		// A walsender seen pending before has had a poll's time to show what it does.
		v, op := j.decide(w, known, backups)
		next[w.pid] = tracked{last: w, verdict: v, operation: op}
		if v != verdictPending {
			out = append(out, judged{w: w, verdict: v, operation: op})
		}
	}
	for _, pid := range slices.Sorted(maps.Keys(j.seen)) {
		t := j.seen[pid]
		if n, still := next[pid]; (still && n.last.started.Equal(t.last.started)) || t.verdict != verdictPending {
			continue // still there, or judged already
		}
		if v, op := j.decide(t.last, true, backups); v != verdictPending {
			out = append(out, judged{w: t.last, verdict: v, operation: op})
		}
	}
	return out, next
}

// slotChanged tells whether a walsender judged by the slot it held (its own, or a
// logical stream of another database) now holds another: a replication connection may
// run one command after another, and what it streams now is judged anew.
func slotChanged(t tracked, w walsender) bool {
	return (t.verdict == verdictOwn || t.verdict == verdictElsewhere) &&
		(w.slot != t.last.slot || w.operation() != t.last.operation())
}

// decide judges w; final says it will not be seen doing more (it was pending at the
// previous poll, or is gone). backups are the clients running a base backup now.
func (j *judge) decide(w walsender, final bool, backups map[[3]string]bool) (verdict, string) {
	op := w.operation()
	if op == OpPhysical && backups[w.client()] {
		op = OpBackup // pg_basebackup's WAL stream, beside its backup
	}
	if j.ownConnecting(w, op) {
		return verdictPending, ""
	}
	if op == "" {
		if !final {
			return verdictPending, ""
		}
		op = w.mode()
	}
	switch {
	case op == OpLogical && !j.watches(w.logicalDatabase()):
		return verdictElsewhere, op
	case op == OpLogical && j.own(w):
		return verdictOwn, op
	case j.allowed(w):
		return verdictAllowed, op
	}
	return verdictUnexpected, op
}

// own tells whether w is the WAL source's walsender: the detector's role and
// application_name on the detector's slot. Anyone can choose an application_name; the
// pair takes logging in as the detector's role.
func (j *judge) own(w walsender) bool {
	return j.cfg.OwnSlot != "" && w.slot == j.cfg.OwnSlot && w.slotType == "logical" &&
		w.role == j.cfg.OwnUser && w.application == j.cfg.OwnApplication
}

// ownConnecting tells whether w looks like the WAL source's walsender before it holds
// the slot (identifying the system, creating the slot, which may wait for running
// transactions): it stays pending until it holds a slot, and is forgotten if it leaves
// without one.
func (j *judge) ownConnecting(w walsender, op string) bool {
	return j.cfg.OwnSlot != "" && op == "" && w.database == j.database &&
		w.role == j.cfg.OwnUser && w.application == j.cfg.OwnApplication
}

// allowed tells whether an entry of replication.allowed matches w. An entry that
// names a client network (or "local") never matches a walsender whose client the
// detector's role cannot see: an unknown client is not evidence of a known one.
func (j *judge) allowed(w walsender) bool {
	for _, c := range j.cfg.Allowed {
		if w.addr == "" && (c.Local || c.Network.IsValid()) {
			continue
		}
		if c.Matches(w.role, w.addr, w.application) {
			return true
		}
	}
	return false
}
