// Package doctor checks, before the first page, that a PostgreSQL server and
// database are set up so that pgtripwire can see: server version, wal_level,
// pg_stat_statements and its settings, query ids, the detector role's rights,
// the replication slot, the publication, replica identities, the DDL event
// triggers, and with the log source on the server's logging and the log directory. Each check is one line, ✓ (fine), ! (works, with a blind spot or a
// risk) or ✗ (the detector cannot see what it should), with the exact fix.
//
// It reads settings and catalogs only; it changes nothing (pgtripwire setup
// does). It is not the detector's readiness check, which runs all the time.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/ha"
	"github.com/pgtripwire/pgtripwire/detector/pgversion"
	"github.com/pgtripwire/pgtripwire/detector/setup"
	"github.com/pgtripwire/pgtripwire/model"
)

// Status is the verdict of one check.
type Status int

// Verdicts, from best to worst.
const (
	OK Status = iota
	Warn
	Fail
)

// Symbol is how the status is printed.
func (s Status) Symbol() string {
	switch s {
	case OK:
		return "✓"
	case Warn:
		return "!"
	default:
		return "✗"
	}
}

// Check is the outcome of one prerequisite.
type Check struct {
	Status Status
	// Name is what was checked ("wal_level").
	Name string
	// Detail is what was found ("replica, want logical").
	Detail string
	// Fix is the exact remedy: SQL, a postgresql.conf line, a command. Empty when
	// Status is OK.
	Fix string
}

// Report is every check, in order.
type Report struct {
	Checks []Check
}

// Failed reports whether any check failed (✗).
func (r *Report) Failed() bool {
	return slices.ContainsFunc(r.Checks, func(c Check) bool { return c.Status == Fail })
}

// Write prints one line per check, and the fix indented below it.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "%s %s: %s\n", c.Status.Symbol(), c.Name, c.Detail)
		if c.Fix != "" {
			for _, l := range strings.Split(c.Fix, "\n") {
				fmt.Fprintf(&b, "    fix: %s\n", l)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Options say what the detector is configured to watch.
type Options struct {
	Tables []config.SensitiveTable
	// WAL is sources.wal.enabled true or auto: the slot, publication and replica
	// identity matter only then. What the WAL source lacks is a failure when it is
	// true, and a warning when it is auto (WALAuto): the source is then off, which the
	// operator chose to allow, but must know.
	WAL, WALAuto      bool
	Slot, Publication string
	// Log is what sources.log reads when it is on; nil when it is off (the server's
	// logging is then not checked).
	Log *LogOptions
	// Responder is response.dsn's connection, nil when response.dsn is not set;
	// ResponderErr why it could not be opened. Automatic is response.automatic on:
	// a responder that cannot terminate is then a failure, not a warning.
	Responder    *pgx.Conn
	ResponderErr error
	Automatic    bool
	// StatisticsIn, when set, is the database through which the detector reads the
	// server's pg_stat_statements (a server watched with several databases): the
	// extension is needed there, not in this one.
	StatisticsIn string
	// HighAvailability is high_availability.enabled without a state_dsn: the
	// target's state is kept in this database's pgtripwire schema.
	HighAvailability bool
}

// walMissing is the status of something the WAL source needs and lacks, and what it
// means for the source.
func (d *doctor) walMissing() (Status, string) {
	if d.opts.WALAuto {
		return Warn, "sources.wal.enabled is auto, so the WAL source is off: mass changes, DDL reports and canary reads go unseen"
	}
	return Fail, "sources.wal cannot stream"
}

// minTrackActivityQuerySize is below what a statement with a long select list
// needs for the activity source to classify it.
const minTrackActivityQuerySize = 4096

// maxSlotLagBytes is the slot lag from which doctor warns.
const maxSlotLagBytes = 1 << 30

// Run checks the server and database conn is connected to, as the role conn
// logged in as (run it with the detector's own DSN). It returns an error only
// when conn itself fails; a check that cannot be read is reported as !.
func Run(ctx context.Context, conn *pgx.Conn, opts Options) (*Report, error) {
	if opts.Slot == "" {
		opts.Slot = "pgtripwire"
	}
	if opts.Publication == "" {
		opts.Publication = "pgtripwire"
	}
	d := &doctor{conn: conn, opts: opts, report: &Report{}}
	for _, check := range []func(context.Context) error{
		d.version, d.walLevel, d.pgss, d.computeQueryID, d.pgssTrack, d.trackUtility,
		d.trackActivityQuerySize, d.maxSlotWALKeepSize, d.role, d.tables, d.slot, d.publication,
		d.replicaIdentity, d.eventTriggers, d.logChecks, d.responder, d.stateSchema,
	} {
		if err := check(ctx); err != nil {
			if conn.IsClosed() || ctx.Err() != nil {
				return d.report, err
			}
			return d.report, fmt.Errorf("doctor: %w", err)
		}
	}
	return d.report, nil
}

type doctor struct {
	conn   *pgx.Conn
	opts   Options
	report *Report

	preloaded bool // pg_stat_statements in shared_preload_libraries
	user      string
	// serverVersion is server_version_num, read by the first check.
	serverVersion int
}

func (d *doctor) add(s Status, name, detail string, fix ...string) {
	d.report.Checks = append(d.report.Checks, Check{Status: s, Name: name, Detail: detail, Fix: strings.Join(fix, "\n")})
}

// setting reads a setting as the server shows it; ok is false when it does not
// exist (an extension not loaded) or the role may not read it.
func (d *doctor) setting(ctx context.Context, name string) (value string, ok bool, err error) {
	var v *string
	if err := d.conn.QueryRow(ctx, `SELECT pg_catalog.current_setting($1, true)`, name).Scan(&v); err != nil {
		if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "42501" {
			return "", false, nil // insufficient_privilege: pg_read_all_settings is missing
		}
		return "", false, fmt.Errorf("read setting %s: %w", name, err)
	}
	if v == nil {
		return "", false, nil
	}
	return *v, true, nil
}

func (d *doctor) version(ctx context.Context) error {
	v, _, err := d.setting(ctx, "server_version_num")
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(v)
	d.serverVersion = n
	human, _, _ := d.setting(ctx, "server_version")
	if n < pgversion.Oldest {
		d.add(Fail, "server version", human+", want 14 or newer", "upgrade PostgreSQL to 14 or newer")
		return nil
	}
	supported := fmt.Sprintf("supported: %d to %d", pgversion.Supported[0], pgversion.Supported[len(pgversion.Supported)-1])
	if major := n / 10000; major > pgversion.Supported[len(pgversion.Supported)-1] {
		d.add(Warn, "server version", fmt.Sprintf("%s, newer than the versions pgtripwire is tested on (%s)", human, supported),
			"check the release notes of pgtripwire for support of PostgreSQL "+strconv.Itoa(major))
	} else {
		d.add(OK, "server version", fmt.Sprintf("%s (%s)", human, supported))
	}
	// What the version gives the detector, or what it does instead: never a failure, an
	// older server loses no detection.
	for _, f := range pgversion.Features {
		d.add(OK, "feature "+f.Name, f.Describe(n))
	}
	return nil
}

func (d *doctor) walLevel(ctx context.Context) error {
	v, _, err := d.setting(ctx, "wal_level")
	if err != nil {
		return err
	}
	if v == "logical" {
		d.add(OK, "wal_level", "logical")
		return nil
	}
	status, why := Warn, "needed by sources.wal (disabled) and the DDL event messages"
	if d.opts.WAL {
		status, why = d.walMissing()
	}
	d.add(status, "wal_level", v+", want logical: "+why, "in postgresql.conf: wal_level = logical   (then restart PostgreSQL)")
	return nil
}

func (d *doctor) pgss(ctx context.Context) error {
	libs, ok, err := d.setting(ctx, "shared_preload_libraries")
	if err != nil {
		return err
	}
	switch {
	case !ok:
		// The library's own settings exist only once it is loaded.
		if _, loaded, err := d.setting(ctx, "pg_stat_statements.track"); err == nil {
			d.preloaded = loaded
		}
		d.add(Warn, "shared_preload_libraries", "not readable by this role (it lacks pg_read_all_settings)",
			"as a superuser: GRANT pg_monitor TO "+model.QuoteIdent(d.currentUser(ctx))+";")
	default:
		for _, l := range strings.Split(libs, ",") {
			if strings.Trim(strings.TrimSpace(l), `"`) == "pg_stat_statements" {
				d.preloaded = true
			}
		}
		if d.preloaded {
			d.add(OK, "shared_preload_libraries", "includes pg_stat_statements")
		} else {
			want := "pg_stat_statements"
			if strings.TrimSpace(libs) != "" {
				want = strings.TrimSpace(libs) + ", pg_stat_statements"
			}
			d.add(Fail, "shared_preload_libraries", fmt.Sprintf("%q lacks pg_stat_statements: the statements source sees nothing", libs),
				fmt.Sprintf("in postgresql.conf: shared_preload_libraries = '%s'   (then restart PostgreSQL)", want))
		}
	}
	var version *string
	if err := d.conn.QueryRow(ctx, `SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_stat_statements')`).Scan(&version); err != nil {
		return fmt.Errorf("read extensions: %w", err)
	}
	switch {
	case version == nil && d.opts.StatisticsIn != "" && d.opts.StatisticsIn != d.database(ctx):
		d.add(OK, "pg_stat_statements extension", "read through database "+d.opts.StatisticsIn+
			" (the server's own, on a server watched with several databases)")
	case version == nil:
		d.add(Fail, "pg_stat_statements extension", "not installed in database "+d.database(ctx),
			"as a superuser, in this database: CREATE EXTENSION pg_stat_statements;")
	default:
		d.add(OK, "pg_stat_statements extension", "version "+*version+" installed")
	}
	return nil
}

func (d *doctor) computeQueryID(ctx context.Context) error {
	v, _, err := d.setting(ctx, "compute_query_id")
	if err != nil {
		return err
	}
	switch {
	case v == "on", v == "auto" && d.preloaded:
		d.add(OK, "compute_query_id", v)
	default:
		d.add(Fail, "compute_query_id", v+": statements get no query id, pg_stat_statements and pg_stat_activity cannot be joined",
			"in postgresql.conf: compute_query_id = on   (then SELECT pg_reload_conf();)")
	}
	return nil
}

func (d *doctor) pgssTrack(ctx context.Context) error {
	v, ok, err := d.setting(ctx, "pg_stat_statements.track")
	if err != nil {
		return err
	}
	switch {
	case !ok:
		d.add(Warn, "pg_stat_statements.track", "unknown until pg_stat_statements is loaded", "")
	case v == "all":
		d.add(OK, "pg_stat_statements.track", "all")
	case v == "top":
		d.add(Warn, "pg_stat_statements.track", trackTopHides, trackAllFix...)
	default:
		d.add(Fail, "pg_stat_statements.track", v+": no statement is counted", trackAllFix...)
	}
	return nil
}

// trackTopHides is what pg_stat_statements.track = top hides from the statements source.
const trackTopHides = "top: statements run inside functions and DO blocks are not counted — the dynamic SQL " +
	"an intruder builds in a DO block or a function (EXECUTE with table and column names assembled from pieces), " +
	"and what PL/pgSQL, SQL and SECURITY DEFINER functions read; only the outer statement is counted, with the " +
	"rows it returned (none for a DO block). Those reads are seen only by the table counters " +
	"(UnexplainedSensitiveReads): no columns, and a role only when the activity sampler saw the session holding the table"

// trackAllFix sets pg_stat_statements.track = all; a reload is enough.
var trackAllFix = []string{
	"in postgresql.conf: pg_stat_statements.track = all   (then SELECT pg_reload_conf();)",
	"or as a superuser: ALTER SYSTEM SET pg_stat_statements.track = 'all'; SELECT pg_reload_conf();",
}

func (d *doctor) trackUtility(ctx context.Context) error {
	v, ok, err := d.setting(ctx, "pg_stat_statements.track_utility")
	if err != nil {
		return err
	}
	switch {
	case !ok:
		d.add(Warn, "pg_stat_statements.track_utility", "unknown until pg_stat_statements is loaded", "")
	case v == "on":
		d.add(OK, "pg_stat_statements.track_utility", "on")
	default:
		d.add(Fail, "pg_stat_statements.track_utility", v+": COPY … TO and FETCH from cursors are not counted, the classic dump goes unseen",
			"in postgresql.conf: pg_stat_statements.track_utility = on   (then SELECT pg_reload_conf();)")
	}
	return nil
}

func (d *doctor) trackActivityQuerySize(ctx context.Context) error {
	v, _, err := d.setting(ctx, "track_activity_query_size")
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(strings.TrimSuffix(v, "B"))
	if strings.HasSuffix(v, "kB") {
		n, _ = strconv.Atoi(strings.TrimSuffix(v, "kB"))
		n *= 1024
	}
	if n < minTrackActivityQuerySize {
		d.add(Warn, "track_activity_query_size", v+": longer running statements are truncated in pg_stat_activity and classified as incomplete",
			fmt.Sprintf("in postgresql.conf: track_activity_query_size = %d   (then restart PostgreSQL)", minTrackActivityQuerySize))
		return nil
	}
	d.add(OK, "track_activity_query_size", v)
	return nil
}

func (d *doctor) maxSlotWALKeepSize(ctx context.Context) error {
	v, _, err := d.setting(ctx, "max_slot_wal_keep_size")
	if err != nil {
		return err
	}
	if v == "-1" {
		status := OK
		if d.opts.WAL {
			status = Warn
		}
		d.add(status, "max_slot_wal_keep_size", "-1 (unlimited): a detector down for long makes the slot keep WAL until the disk fills",
			fixIf(status, "in postgresql.conf: max_slot_wal_keep_size = '10GB'   (size it to your disk; then SELECT pg_reload_conf();)"))
		return nil
	}
	d.add(OK, "max_slot_wal_keep_size", v)
	return nil
}

func fixIf(s Status, fix string) string {
	if s == OK {
		return ""
	}
	return fix
}

func (d *doctor) currentUser(ctx context.Context) string {
	if d.user == "" {
		_ = d.conn.QueryRow(ctx, `SELECT current_user`).Scan(&d.user)
	}
	return d.user
}

func (d *doctor) database(ctx context.Context) string {
	var db string
	_ = d.conn.QueryRow(ctx, `SELECT current_database()`).Scan(&db)
	return db
}

func (d *doctor) role(ctx context.Context) error {
	var super, repl, stats bool
	if err := d.conn.QueryRow(ctx, `SELECT rolsuper, rolreplication, pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
FROM pg_catalog.pg_roles WHERE rolname = current_user`).Scan(&super, &repl, &stats); err != nil {
		return fmt.Errorf("read the role's attributes: %w", err)
	}
	user := d.currentUser(ctx)
	name := "role " + user
	r := model.QuoteIdent(user)
	if super {
		d.add(Warn, name, "is a superuser: the detector needs far less, and a stolen detector password would be a superuser's",
			"run the detector as a dedicated role: pgtripwire setup --config FILE --apply --dsn <superuser DSN>, then use that role in database.dsn")
		return nil
	}
	if stats {
		d.add(OK, name+" statistics", "member of pg_read_all_stats (pg_monitor): sees every role's statements")
	} else {
		d.add(Fail, name+" statistics", "not a member of pg_read_all_stats: other roles' statements are hidden from it",
			"as a superuser: GRANT pg_monitor TO "+r+";")
	}
	switch {
	case repl:
		d.add(OK, name+" replication", "REPLICATION (it can stream every table: guard its password)")
	case d.opts.WAL:
		status, why := d.walMissing()
		d.add(status, name+" replication", "no REPLICATION: "+why, "as a superuser: ALTER ROLE "+r+" REPLICATION;")
	}
	return nil
}

// stateSchema checks, with high availability, that the role may keep the target's
// state in the pgtripwire schema: read and upsert both tables.
func (d *doctor) stateSchema(ctx context.Context) error {
	if !d.opts.HighAvailability {
		return nil
	}
	const name = "high availability state (schema " + ha.Schema + ")"
	var missing []string
	for _, table := range []string{"rule_state", "replay_guard"} {
		// Looked up by name: to_regclass needs the USAGE this may lack.
		var exists, rights bool
		// One privilege per call: a list is true when any one of them is held.
		err := d.conn.QueryRow(ctx, `SELECT true, pg_catalog.has_schema_privilege(n.oid, 'USAGE')
	AND pg_catalog.has_table_privilege(c.oid, 'SELECT') AND pg_catalog.has_table_privilege(c.oid, 'INSERT')
	AND pg_catalog.has_table_privilege(c.oid, 'UPDATE')
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2`, ha.Schema, table).Scan(&exists, &rights)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read the rights on %s.%s: %w", ha.Schema, table, err)
		}
		switch {
		case !exists:
			missing = append(missing, ha.Schema+"."+table+" does not exist")
		case !rights:
			missing = append(missing, "no SELECT, INSERT and UPDATE on "+ha.Schema+"."+table)
		}
	}
	if len(missing) > 0 {
		d.add(Fail, name, strings.Join(missing, "; ")+": a detector taking the target over would start without its state",
			"pgtripwire setup --config FILE --apply --dsn <administrator DSN> (it creates the schema and grants the rights)")
		return nil
	}
	d.add(OK, name, "the role may read and write the target's rule state and replay guard")
	return nil
}

// responder checks the role of response.dsn: it must be able to terminate another
// role's session (pg_signal_backend, and pg_read_all_stats for the backend start that
// guards against a reused pid), and should not be the detector's role or a superuser.
func (d *doctor) responder(ctx context.Context) error {
	missing := Warn
	if d.opts.Automatic {
		missing = Fail
	}
	switch {
	case d.opts.ResponderErr != nil:
		d.add(missing, "responder", "cannot connect with response.dsn: "+d.opts.ResponderErr.Error(),
			"check response.dsn (or PGTRIPWIRE_RESPONSE_DSN): docs/response.md")
		return nil
	case d.opts.Responder == nil:
		if d.opts.Automatic {
			d.add(Fail, "responder", "response.automatic is on but response.dsn is not set", "set response.dsn: docs/response.md")
		}
		return nil
	}
	var user string
	var super, signal, stats, createRole bool
	if err := d.opts.Responder.QueryRow(ctx, `SELECT current_user::text, rolsuper,
  pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'USAGE'), pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
  rolcreaterole
FROM pg_catalog.pg_roles WHERE rolname = current_user`).Scan(&user, &super, &signal, &stats, &createRole); err != nil {
		d.add(missing, "responder", "cannot read the responder role's attributes: "+err.Error())
		return nil
	}
	name, r := "responder "+user, model.QuoteIdent(user)
	switch {
	case user == d.currentUser(ctx):
		d.add(Warn, name, "is the detector's own role: the detector's password could then terminate sessions and lock roles",
			"give response.dsn a role of its own: docs/response.md")
	case super:
		d.add(Warn, name, "is a superuser: terminating needs pg_signal_backend and pg_read_all_stats only",
			"CREATE ROLE pgtripwire_responder LOGIN; GRANT pg_signal_backend, pg_read_all_stats TO pgtripwire_responder;")
		return nil
	}
	if signal && stats {
		d.add(OK, name+" terminate", "member of pg_signal_backend and pg_read_all_stats: can terminate a captured session")
	} else {
		d.add(missing, name+" terminate", "cannot terminate another role's session: needs pg_signal_backend and pg_read_all_stats",
			"as a superuser: GRANT pg_signal_backend, pg_read_all_stats TO "+r+";")
	}
	if createRole {
		d.add(OK, name+" lock", "CREATEROLE: can lock a role (16+: those it has ADMIN OPTION on)")
	} else {
		d.add(Warn, name+" lock", "no CREATEROLE: `respond --lock-role` will fail", "as a superuser: ALTER ROLE "+r+" CREATEROLE;")
	}
	return nil
}

// tables checks that the sensitive tables exist and that the detector cannot
// read them: it never needs to.
func (d *doctor) tables(ctx context.Context) error {
	for _, t := range d.opts.Tables {
		var exists, canRead bool
		if err := d.conn.QueryRow(ctx, `SELECT c.oid IS NOT NULL, coalesce(pg_catalog.has_table_privilege(c.oid, 'SELECT'), false)
FROM (SELECT) x LEFT JOIN pg_catalog.pg_class c ON c.relname = $2
  AND c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)`, t.Schema, t.Name).Scan(&exists, &canRead); err != nil {
			return fmt.Errorf("read table %s: %w", t.Table, err)
		}
		switch {
		case !exists:
			d.add(Fail, "table "+t.Table, "does not exist in database "+d.database(ctx), "fix sensitive: in the configuration, or connect to the right database")
		case canRead:
			d.add(Warn, "table "+t.Table, "the detector's role can SELECT it: it never needs to, and a stolen detector password would read it",
				fmt.Sprintf("REVOKE SELECT ON %s FROM %s;   (and from PUBLIC, or from the group granting it)", tableIdent(t), model.QuoteIdent(d.currentUser(ctx))))
		default:
			d.add(OK, "table "+t.Table, "exists, not readable by the detector's role")
		}
	}
	return nil
}

func tableIdent(t config.SensitiveTable) string {
	return model.QuoteIdent(t.Schema) + "." + model.QuoteIdent(t.Name)
}

func (d *doctor) slot(ctx context.Context) error {
	if !d.opts.WAL {
		return nil
	}
	name := "slot " + d.opts.Slot
	var plugin, db, walStatus *string
	var active, failover bool
	var lag *int64
	failoverColumn := "false" // the column appeared with failover slots
	if pgversion.FailoverSlots.Has(d.serverVersion) {
		failoverColumn = "failover"
	}
	err := d.conn.QueryRow(ctx, `SELECT plugin, database, active, wal_status,
  pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, `+failoverColumn+`
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, d.opts.Slot).Scan(&plugin, &db, &active, &walStatus, &lag, &failover)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		status, why := d.walMissing()
		if !d.opts.WALAuto {
			why = "sources.wal creates it at start if its role has REPLICATION"
		}
		failoverArg := ""
		if pgversion.FailoverSlots.Has(d.serverVersion) {
			failoverArg = ", failover => true"
		}
		d.add(status, name, "missing: "+why,
			fmt.Sprintf("pgtripwire setup --config FILE --apply, or as a superuser: SELECT pg_create_logical_replication_slot('%s', 'pgoutput'%s);", d.opts.Slot, failoverArg))
		return nil
	case err != nil:
		return fmt.Errorf("read slot %s: %w", d.opts.Slot, err)
	}
	current := d.database(ctx)
	switch {
	case deref(plugin) != "pgoutput" || deref(db) != current:
		d.add(Fail, name, fmt.Sprintf("exists for plugin %q in database %q, want pgoutput in %q", deref(plugin), deref(db), current),
			fmt.Sprintf("drop it (SELECT pg_drop_replication_slot('%s');) or set sources.wal.slot to another name", d.opts.Slot))
	case deref(walStatus) == "lost":
		d.add(Fail, name, "lost: the WAL it needed was removed (max_slot_wal_keep_size); changes since then were never seen",
			fmt.Sprintf("SELECT pg_drop_replication_slot('%s');   then restart the detector (it creates the slot again)", d.opts.Slot))
	case lag != nil && *lag > maxSlotLagBytes:
		d.add(Warn, name, fmt.Sprintf("%d MB behind the server (active: %v): the detector is down or slow", *lag>>20, active),
			"start the detector (pgtripwire run), or check its logs")
	case !active:
		d.add(Warn, name, fmt.Sprintf("present, not active (lag %d kB): the detector is not streaming now", deref64(lag)>>10),
			"start the detector with sources.wal.enabled: true")
	default:
		d.add(OK, name, fmt.Sprintf("pgoutput, active, lag %d kB", deref64(lag)>>10))
	}
	if pgversion.FailoverSlots.Has(d.serverVersion) && !failover && deref(plugin) == "pgoutput" {
		// Made by an older pgtripwire or by hand. Not a blind spot while this server is the
		// primary, hence a warning; the protocol command keeps the slot's position.
		d.add(Warn, name+" failover", "not a failover slot: a standby promoted to primary has no copy of it, and changes after a failover go unseen until setup runs there",
			fmt.Sprintf(`as a superuser or the detector's role: psql "dbname=%s replication=database" -c 'ALTER_REPLICATION_SLOT %s (FAILOVER true)'   (standbys need sync_replication_slots = on)`,
				current, model.QuoteIdent(d.opts.Slot)))
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func deref64(n *int64) int64 {
	if n == nil {
		return 0
	}
	return *n
}

func (d *doctor) publication(ctx context.Context) error {
	if !d.opts.WAL {
		return nil
	}
	name := "publication " + d.opts.Publication
	var all bool
	err := d.conn.QueryRow(ctx, `SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = $1`, d.opts.Publication).Scan(&all)
	idents := make([]string, len(d.opts.Tables))
	for i, t := range d.opts.Tables {
		idents[i] = tableIdent(t)
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		status, why := d.walMissing()
		if !d.opts.WALAuto {
			why = "the detector's role cannot create it (it needs ownership of the tables)"
		}
		d.add(status, name, "missing: "+why,
			fmt.Sprintf("pgtripwire setup --config FILE --apply, or as the tables' owner: CREATE PUBLICATION %s FOR TABLE %s;",
				model.QuoteIdent(d.opts.Publication), strings.Join(idents, ", ")))
		return nil
	case err != nil:
		return fmt.Errorf("read publication %s: %w", d.opts.Publication, err)
	case all:
		d.add(Warn, name, "FOR ALL TABLES: the slot decodes, and the detector receives, changes to every table",
			fmt.Sprintf("CREATE PUBLICATION a new one FOR TABLE %s only, and set sources.wal.publication", strings.Join(idents, ", ")))
		return nil
	}
	rows, err := d.conn.Query(ctx, `SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = $1`, d.opts.Publication)
	if err != nil {
		return fmt.Errorf("read publication %s: %w", d.opts.Publication, err)
	}
	have, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var p [2]string
		err := r.Scan(&p[0], &p[1])
		return p, err
	})
	if err != nil {
		return fmt.Errorf("read publication %s: %w", d.opts.Publication, err)
	}
	var missing []string
	for _, t := range d.opts.Tables {
		if !slices.Contains(have, [2]string{t.Schema, t.Name}) {
			missing = append(missing, tableIdent(t))
		}
	}
	if len(missing) > 0 {
		d.add(Fail, name, "lacks "+strings.Join(missing, ", ")+": changes to them go unseen",
			fmt.Sprintf("as the tables' owner: ALTER PUBLICATION %s ADD TABLE %s;", model.QuoteIdent(d.opts.Publication), strings.Join(missing, ", ")))
		return nil
	}
	d.add(OK, name, fmt.Sprintf("covers the %d sensitive table(s)", len(d.opts.Tables)))
	return nil
}

func (d *doctor) replicaIdentity(ctx context.Context) error {
	if !d.opts.WAL {
		return nil
	}
	for _, t := range d.opts.Tables {
		var ident string
		err := d.conn.QueryRow(ctx, `SELECT c.relreplident::text FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`, t.Schema, t.Name).Scan(&ident)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			continue // reported by tables
		case err != nil:
			return fmt.Errorf("read replica identity of %s: %w", t.Table, err)
		case ident == "f":
			d.add(OK, "replica identity of "+t.Table, "full")
		default:
			d.add(Warn, "replica identity of "+t.Table, replIdentName(ident)+": which sensitive columns an UPDATE changed is unknown",
				fmt.Sprintf("as the table's owner: ALTER TABLE %s REPLICA IDENTITY FULL;   (every UPDATE/DELETE then logs the whole old row)", tableIdent(t)))
		}
	}
	return nil
}

func replIdentName(c string) string {
	switch c {
	case "d":
		return "default (primary key)"
	case "n":
		return "nothing"
	case "i":
		return "index"
	}
	return c
}

func (d *doctor) eventTriggers(ctx context.Context) error {
	rows, err := d.conn.Query(ctx, `SELECT evtname FROM pg_catalog.pg_event_trigger WHERE evtname = ANY($1) AND evtenabled = 'A'`, setup.EventTriggers)
	if err != nil {
		return fmt.Errorf("read event triggers: %w", err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read event triggers: %w", err)
	}
	if len(have) == len(setup.EventTriggers) {
		d.add(OK, "DDL event triggers", "present, enabled always")
		return nil
	}
	d.add(Warn, "DDL event triggers", fmt.Sprintf("%d of %d present and enabled: security-relevant DDL (row security turned off, policies, GRANT) is not reported",
		len(have), len(setup.EventTriggers)),
		"pgtripwire setup --config FILE --apply --dsn <superuser DSN>")
	return nil
}
