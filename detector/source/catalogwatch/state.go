package catalogwatch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtripwire/pgtripwire/model"
)

// state is one poll's view of everything watched.
type state struct {
	database      string
	slots         map[string]slot
	published     map[[2]string]bool // (publication, sensitive table)
	roles         map[uint32]role
	members       map[[2]uint32]bool // (member, dangerous role)
	pgssInstalled bool
	pgssSchema    string // where pg_stat_statements_info was read, quoted
	pgssReset     time.Time
	pgssDealloc   int64
	dbReset       time.Time // zero when never reset
	settings      map[string]string
	roleSettings  map[roleSetting]string
	// confLoaded is pg_conf_load_time() of the session that read the state: settings
	// change only when the configuration is reloaded, which moves it.
	confLoaded time.Time
	// readAt is when the poll that read the state began, by the detector's clock.
	readAt time.Time
}

type slot struct {
	typ, database string
	active        bool
	pid           int32
	backendType   string // of the session holding it: "walsender", "client backend", ""
	user, addr    string
	application   string
	confirmed     string // confirmed_flush_lsn as text, "" for physical slots
	decoded       int64  // total_txns + total_bytes of pg_stat_replication_slots
}

type role struct {
	name                        string
	super, bypassRLS, replicate bool
}

type roleSetting struct{ role, database, name string }

// stateQueries are read in one round trip. They need no privilege beyond what every
// role has, except the settings marked superuser-only (shared_preload_libraries),
// which pg_read_all_settings (part of pg_monitor) shows.
const (
	databaseQuery = `SELECT current_database(),
  (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),
  (SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_stat_statements'),
  pg_conf_load_time()`

	// slotsQuery reads the physical slots (they stream the whole cluster) and the
	// logical slots of the watched databases ($1, Config.Databases; NULL: the
	// connection's): a logical slot decodes only the database it was created in, and
	// the detector of another database watches that one.
	slotsQuery = `SELECT s.slot_name::text, s.slot_type, coalesce(s.database::text, ''), s.active,
  coalesce(s.active_pid, 0), coalesce(a.backend_type, ''), coalesce(a.usename::text, ''),
  coalesce(host(a.client_addr), ''), coalesce(a.application_name, ''),
  coalesce(s.confirmed_flush_lsn::text, ''),
  coalesce(st.total_txns, 0) + coalesce(st.total_bytes, 0)
FROM pg_replication_slots s
LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
LEFT JOIN pg_stat_replication_slots st ON st.slot_name = s.slot_name
WHERE s.slot_type = 'physical' OR s.database = ANY(coalesce($1::text[], ARRAY[current_database()::text]))`

	publicationsQuery = `SELECT pubname::text, schemaname::text, tablename::text FROM pg_publication_tables`

	rolesQuery = `SELECT oid, rolname::text, rolsuper, rolbypassrls, rolreplication FROM pg_roles`

	// membersQuery follows memberships transitively: a role granted to a role that is a
	// member of pg_read_all_data reads all data too.
	membersQuery = `WITH RECURSIVE m(member, granted) AS (
  SELECT am.member, am.roleid FROM pg_auth_members am
   WHERE am.roleid IN (SELECT oid FROM pg_roles WHERE rolname = ANY($1))
  UNION
  SELECT am.member, m.granted FROM pg_auth_members am JOIN m ON am.roleid = m.member
)
SELECT member, granted FROM m`

	// settingsQuery is the most expensive of the batch (pg_settings formats every
	// setting of the server, some 350, to return ten): it runs only when the session's
	// pg_conf_load_time() moved (see read).
	settingsQuery = `SELECT name, setting || CASE WHEN pending_restart THEN ' (pending restart)' ELSE '' END
FROM pg_settings WHERE name = ANY($1)`

	roleSettingsQuery = `SELECT coalesce(r.rolname::text, ''), coalesce(d.datname::text, ''), c.setting
FROM pg_db_role_setting s
LEFT JOIN pg_roles r ON r.oid = s.setrole
LEFT JOIN pg_database d ON d.oid = s.setdatabase
CROSS JOIN LATERAL unnest(s.setconfig) AS c(setting)`
)

// infoQuery reads pg_stat_statements_info in the extension's schema.
func infoQuery(schema string) string {
	return `SELECT dealloc, stats_reset FROM ` + schema + `.pg_stat_statements_info`
}

// read reads the watched state, in one round trip when nothing changed.
//
// Settings (pg_settings) change only when the server's configuration is reloaded:
// ALTER SYSTEM, an edited postgresql.conf, a restart (which ends this session). A
// backend applies a reload before it reads its next command and moves its
// pg_conf_load_time() then, so the settings read after an unchanged load time are the
// settings read before it, and they are read again only when it moved (or once per
// session). Per-role and per-database settings (pg_db_role_setting) are catalog rows,
// read every poll.
//
// pg_stat_statements_info lives in the extension's schema: once a poll of this session
// found it there, the next ones read it in the same batch. Should the extension have
// been dropped or moved meanwhile, that batch fails and the state is read again the long
// way, which finds out.
func (s *Source) read(ctx context.Context, conn *pgx.Conn) (*state, error) {
	st, err := s.readBatch(ctx, conn, s.sess.pgssSchema)
	if err != nil && s.sess.pgssSchema != "" && pgssGone(err) {
		s.sess.pgssSchema = ""
		st, err = s.readBatch(ctx, conn, "")
	}
	return st, err
}

// pgssGone tells whether err may come from a pg_stat_statements_info that is no longer
// where it was: dropped, moved to another schema, or not loaded.
func pgssGone(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "42P01", "42883", "3F000", "55000": // undefined table, function, schema; not preloaded
		return true
	}
	return false
}

// readBatch reads the state; pgssSchema, when not empty, is where the previous poll of
// this session found pg_stat_statements_info, read in the same batch.
func (s *Source) readBatch(ctx context.Context, conn *pgx.Conn, pgssSchema string) (*state, error) {
	st := &state{
		slots:        make(map[string]slot),
		published:    make(map[[2]string]bool),
		roles:        make(map[uint32]role),
		members:      make(map[[2]uint32]bool),
		roleSettings: make(map[roleSetting]string),
	}
	b := &pgx.Batch{}
	var dbReset *time.Time
	var schema *string
	b.Queue(databaseQuery).QueryRow(func(row pgx.Row) error {
		return row.Scan(&st.database, &dbReset, &schema, &st.confLoaded)
	})
	b.Queue(slotsQuery, s.cfg.Databases).Query(func(rows pgx.Rows) error {
		var name string
		var sl slot
		_, err := pgx.ForEachRow(rows, []any{&name, &sl.typ, &sl.database, &sl.active, &sl.pid, &sl.backendType,
			&sl.user, &sl.addr, &sl.application, &sl.confirmed, &sl.decoded}, func() error {
			st.slots[name] = sl
			return nil
		})
		return err
	})
	b.Queue(publicationsQuery).Query(func(rows pgx.Rows) error {
		var pub, schema, table string
		_, err := pgx.ForEachRow(rows, []any{&pub, &schema, &table}, func() error {
			if q, ok := s.isSensitive(schema, table); ok {
				st.published[[2]string{pub, q}] = true
			}
			return nil
		})
		return err
	})
	b.Queue(rolesQuery).Query(func(rows pgx.Rows) error {
		var oid uint32
		var r role
		_, err := pgx.ForEachRow(rows, []any{&oid, &r.name, &r.super, &r.bypassRLS, &r.replicate}, func() error {
			st.roles[oid] = r
			return nil
		})
		return err
	})
	b.Queue(membersQuery, DangerousRoles).Query(func(rows pgx.Rows) error {
		var member, granted uint32
		_, err := pgx.ForEachRow(rows, []any{&member, &granted}, func() error {
			st.members[[2]uint32{member, granted}] = true
			return nil
		})
		return err
	})
	b.Queue(roleSettingsQuery).Query(func(rows pgx.Rows) error {
		var rs roleSetting
		var setting string
		_, err := pgx.ForEachRow(rows, []any{&rs.role, &rs.database, &setting}, func() error {
			name, value, _ := strings.Cut(setting, "=")
			rs.name = strings.ToLower(name)
			if slices.Contains(s.cfg.Settings, rs.name) {
				st.roleSettings[rs] = value
			}
			return nil
		})
		return err
	})
	settingsRead := !s.sess.confKnown
	if settingsRead {
		s.queueSettings(b, st)
	}
	infoRead := pgssSchema != ""
	if infoRead {
		// Last, so that a failure (the extension dropped or moved: read retries the
		// long way) skips nothing else.
		b.Queue(infoQuery(pgssSchema)).QueryRow(func(row pgx.Row) error {
			return row.Scan(&st.pgssDealloc, &st.pgssReset)
		})
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("read watched state: %w", err)
	}
	if dbReset != nil {
		st.dbReset = *dbReset
	}

	if !settingsRead && !st.confLoaded.Equal(s.sess.confLoaded) {
		b := &pgx.Batch{}
		s.queueSettings(b, st)
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			return nil, fmt.Errorf("read watched settings: %w", err)
		}
		settingsRead = true
	}
	if !settingsRead {
		st.settings = s.sess.settings
	}

	switch {
	case schema == nil:
		// Not installed in this database.
	case infoRead && *schema == pgssSchema:
		st.pgssInstalled, st.pgssSchema = true, pgssSchema
	default:
		err := conn.QueryRow(ctx, infoQuery(*schema)).Scan(&st.pgssDealloc, &st.pgssReset)
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == "55000":
			// Installed but not preloaded: the statements source reports it; there is
			// nothing to reset.
		case err != nil:
			return nil, fmt.Errorf("read pg_stat_statements_info: %w", err)
		default:
			st.pgssInstalled, st.pgssSchema = true, *schema
		}
	}
	return st, nil
}

// queueSettings adds the read of the watched settings to b.
func (s *Source) queueSettings(b *pgx.Batch, st *state) {
	st.settings = make(map[string]string, len(s.cfg.Settings))
	b.Queue(settingsQuery, s.cfg.Settings).Query(func(rows pgx.Rows) error {
		var name, value string
		_, err := pgx.ForEachRow(rows, []any{&name, &value}, func() error {
			st.settings[name] = value
			return nil
		})
		return err
	})
}

// sessionState is what the polls of one session reuse: it is forgotten when the
// connection is, since pg_conf_load_time() is the backend's own.
type sessionState struct {
	// confKnown tells that settings were read at pg_conf_load_time() confLoaded.
	confKnown  bool
	confLoaded time.Time
	settings   map[string]string
	// pgssSchema is where pg_stat_statements_info was found; "" for unknown.
	pgssSchema string
}

// remember keeps what the next polls of this session can reuse from st, a state read
// and handed over.
func (ss *sessionState) remember(st *state) {
	ss.confKnown, ss.confLoaded, ss.settings = true, st.confLoaded, st.settings
	ss.pgssSchema = st.pgssSchema
}

// diff returns the events that lead from prev to cur, in a stable order.
func (s *Source) diff(now time.Time, prev, cur *state) []model.Event {
	var events []model.Event
	add := func(ev model.Event) {
		ev.Time, ev.Source = now, Name
		events = append(events, ev)
	}

	for _, name := range slices.Sorted(maps.Keys(cur.slots)) {
		sl := cur.slots[name]
		ev := model.Event{Object: name, Database: sl.database, Operation: sl.typ}
		if sl.active {
			ev.Role, ev.ClientAddr, ev.Application, ev.PID = sl.user, sl.addr, sl.application, sl.pid
		}
		old, existed := prev.slots[name]
		if slices.Contains(s.cfg.OwnSlots, name) {
			// Created and streamed by the WAL source: only a use by someone else is news.
			if sl.typ == "logical" && existed && s.ownSlotUsed(old, sl) && !s.cfg.OwnStreams.HeldSince(name, prev.readAt) {
				ev.Kind = KindOwnSlotUsed
				add(ev)
			}
			continue
		}
		if sl.active && s.allowed(sl) {
			continue // a declared standby, backup or subscriber holds it
		}
		if !existed {
			ev.Kind = KindSlotCreated
			add(ev)
			old = slot{typ: sl.typ, database: sl.database}
		}
		if sl.typ == "logical" && slotUsed(old, sl, existed) {
			ev.Kind = KindSlotUsed
			add(ev)
		}
	}

	for _, k := range slices.SortedFunc(maps.Keys(cur.published), comparePair) {
		if prev.published[k] || slices.Contains(s.cfg.OwnPublications, k[0]) {
			continue
		}
		add(model.Event{Kind: KindPublicationSensitive, Object: k[0], Database: cur.database,
			Relation: k[1], SensitiveRead: s.sensitiveColumns(k[1]), Complete: true})
	}

	for _, oid := range slices.Sorted(maps.Keys(cur.roles)) {
		r, old := cur.roles[oid], prev.roles[oid] // a new role starts from no attributes
		for _, a := range []struct {
			name     string
			now, was bool
		}{
			{"SUPERUSER", r.super, old.super},
			{"BYPASSRLS", r.bypassRLS, old.bypassRLS},
			{"REPLICATION", r.replicate, old.replicate},
		} {
			if a.now && !a.was {
				add(model.Event{Kind: KindRoleAttribute, Role: r.name, Object: a.name, Operation: a.name})
			}
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(cur.members), func(a, b [2]uint32) int {
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		return int(a[1]) - int(b[1])
	}) {
		if prev.members[k] {
			continue
		}
		member, granted := cur.roles[k[0]].name, cur.roles[k[1]].name
		if member == "" || granted == "" {
			continue // dropped between the two queries
		}
		add(model.Event{Kind: KindRoleMembership, Role: member, Object: granted, Operation: "GRANT"})
	}

	switch {
	case prev.pgssInstalled && !cur.pgssInstalled:
		add(model.Event{Kind: KindExtensionDropped, Object: "pg_stat_statements", Database: cur.database})
	case prev.pgssInstalled && cur.pgssInstalled:
		if !cur.pgssReset.Equal(prev.pgssReset) {
			add(model.Event{Kind: KindStatsReset, Object: "pg_stat_statements"})
		}
		if d := cur.pgssDealloc - prev.pgssDealloc; d > 0 {
			add(model.Event{Kind: KindStatementsEvicted, Object: "pg_stat_statements", Rows: d})
		}
	}
	if !cur.dbReset.IsZero() && !cur.dbReset.Equal(prev.dbReset) {
		add(model.Event{Kind: KindStatsReset, Object: "pg_stat_database", Database: cur.database})
	}

	for _, name := range slices.Sorted(maps.Keys(cur.settings)) {
		if was, ok := prev.settings[name]; ok && was != cur.settings[name] {
			add(model.Event{Kind: KindSettingChanged, Object: name})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(prev.settings)) {
		if _, ok := cur.settings[name]; !ok {
			add(model.Event{Kind: KindSettingChanged, Object: name}) // no longer visible: unloaded
		}
	}
	changed := map[roleSetting]bool{}
	for k, v := range cur.roleSettings {
		if was, ok := prev.roleSettings[k]; !ok || was != v {
			changed[k] = true
		}
	}
	for k := range prev.roleSettings {
		if _, ok := cur.roleSettings[k]; !ok {
			changed[k] = true
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(changed), func(a, b roleSetting) int {
		return strings.Compare(a.role+"\x00"+a.database+"\x00"+a.name, b.role+"\x00"+b.database+"\x00"+b.name)
	}) {
		add(model.Event{Kind: KindSettingChanged, Object: k.name, Role: k.role, Database: k.database})
	}
	return events
}

// slotUsed tells whether a logical slot was read between two polls in a way worth
// reporting: by a client backend through the SQL interface (the session holds it, or its
// position or decoding statistics moved while no walsender held it at either poll), or
// by a walsender that was not attached before.
func slotUsed(old, cur slot, existed bool) bool {
	if cur.active && cur.backendType != "walsender" && cur.pid != 0 {
		return true // pg_logical_slot_get_changes / peek, caught while it runs
	}
	moved := cur.confirmed != old.confirmed || cur.decoded != old.decoded
	if !existed {
		moved = cur.decoded > 0 // created and read between two polls
	}
	walsender := (old.active && old.backendType == "walsender") || (cur.active && cur.backendType == "walsender")
	if moved && !walsender {
		return true
	}
	return cur.active && cur.backendType == "walsender" && cur.pid != old.pid
}

// ownSlotUsed tells whether one of our slots, present at both polls, was used by anyone
// but the WAL source's walsender: a client backend holds it (pg_logical_slot_get_changes,
// …_peek_…, pg_replication_slot_advance), its position or decoding statistics moved while
// no walsender held it at either poll (read and released between two polls), or a
// walsender that is not ours attached to it. Reading our slot through the SQL interface
// also consumes the changes: the WAL source never sees them, and this event is all that
// is left of them.
//
// A slot that was not there at the previous poll is not judged: the WAL source (or
// pgtripwire setup, through a client backend) is creating it, and it holds no change
// the WAL source could have missed.
func (s *Source) ownSlotUsed(old, cur slot) bool {
	if cur.active && cur.backendType != "walsender" && cur.pid != 0 {
		return true
	}
	moved := cur.confirmed != old.confirmed || cur.decoded != old.decoded
	walsender := (old.active && old.backendType == "walsender") || (cur.active && cur.backendType == "walsender")
	if moved && !walsender {
		return true
	}
	// A foreign walsender is reported when it attaches, like one on a foreign slot; what
	// it moves afterwards is the same use.
	return cur.active && cur.backendType == "walsender" && cur.pid != old.pid && !s.isOwnWalsender(cur)
}

// isOwnWalsender tells whether the session holding sl is the WAL source's walsender: a
// walsender of the detector's role with the detector's application_name (the WAL source
// connects with the same configuration as this source, adding replication=database).
// Anyone can set the application_name; the pair takes logging in as the detector's role.
func (s *Source) isOwnWalsender(sl slot) bool {
	return sl.active && sl.backendType == "walsender" && sl.user == s.cfg.OwnUser && sl.application == s.cfg.OwnApplication
}

// allowed reports whether the session holding a slot is a replication client the
// configuration declares.
func (s *Source) allowed(sl slot) bool {
	for _, c := range s.cfg.Allowed {
		if c.Matches(sl.user, sl.addr, sl.application) {
			return true
		}
	}
	return false
}
