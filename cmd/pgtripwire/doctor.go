package main

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/doctor"
	"github.com/pgtripwire/pgtripwire/detector/source"
	logsource "github.com/pgtripwire/pgtripwire/detector/source/log"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
)

const doctorHelp = `Check that the server and database are set up so that pgtripwire can see,
as the role of database.dsn (run it with the detector's own configuration; with
database.standbys or targets:, every server and database it watches, each under
a "== cluster/server/database" heading):
server version, wal_level, pg_stat_statements (preloaded, installed, track,
track_utility), compute_query_id, track_activity_query_size,
max_slot_wal_keep_size, the role's rights (pg_read_all_stats, REPLICATION, not
a superuser, no SELECT on the sensitive tables), and with sources.wal enabled
the slot (present, active, lag), the publication and the replica identities;
also the DDL event triggers of pgtripwire setup; and with sources.log enabled
log_destination, logging_collector, log_min_messages, log_min_error_statement,
log_connections, the log directory as the detector reads it, and for syslog
log_line_prefix and lc_messages.

One line per check: ✓ fine, ! works with a blind spot or a risk, ✗ the
detector cannot see what it should; each ! and ✗ with the exact fix (SQL or a
postgresql.conf line). Nothing is changed.

Exit status: 0 when no check fails (warnings allowed), 1 when one fails or the
database cannot be reached, 2 for bad usage or a bad configuration.`

func newDoctorCommand(stdout io.Writer) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "doctor --config FILE",
		Short: "Check the server's settings and the detector role's rights, with the exact fixes",
		Long:  doctorHelp,
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireConfigFlag(path); err != nil {
				return err
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			if !cfg.Fleet() && len(cfg.Database.Standbys) == 0 {
				connConfig, err := oneOffConnConfig(cfg, "pgtripwire doctor")
				if err != nil {
					return err
				}
				return runDoctor(cmd.Context(), stdout, cfg, connConfig, cfg.RedactedDSN(), doctorOptions(cfg, cfg.Sensitive))
			}
			return runFleetDoctor(cmd.Context(), stdout, cfg)
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "path to the YAML configuration file")
	return cmd
}

// doctorOptions are the checks of the sources that are on, for a database with tables.
func doctorOptions(cfg *config.Config, tables []config.SensitiveTable) doctor.Options {
	w := wal.SettingsOf(cfg.Sources)
	opts := doctor.Options{
		Tables:      tables,
		WAL:         w.On(),
		WALAuto:     w.Enabled == wal.Auto,
		Slot:        w.Slot,
		Publication: w.Publication,
	}
	if l, ok := source.Lookup[*logsource.Settings](cfg.Sources, logsource.Name); ok && l.On() {
		opts.Log = &doctor.LogOptions{Directory: l.Directory, Format: l.Format, SyslogListen: l.Syslog.Listen}
	}
	opts.Automatic = cfg.Response.Automatic == config.ResponseOn
	opts.HighAvailability = cfg.HighAvailability.Enabled && cfg.HighAvailability.StateDSN == ""
	return opts
}

// runDoctor checks one database, connected with connConfig (where names it, never
// with a password), and writes its report. It fails when the database cannot be
// reached or a check fails.
func runDoctor(ctx context.Context, stdout io.Writer, cfg *config.Config, connConfig *pgx.ConnConfig, where string,
	opts doctor.Options) error {
	conn, err := pgx.ConnectConfig(ctx, connConfig)
	if err != nil {
		fmt.Fprintf(stdout, "✗ connect: %s\n", where)
		return fmt.Errorf("connect to the database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if cfg.Response.DSN != "" {
		rc, err := responderConn(ctx, cfg, "pgtripwire doctor")
		if err != nil {
			opts.ResponderErr = err
		} else {
			defer rc.Close(context.WithoutCancel(ctx))
			opts.Responder = rc
		}
	}
	rep, err := doctor.Run(ctx, conn, opts)
	if werr := rep.Write(stdout); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	if rep.Failed() {
		return fmt.Errorf("doctor: %d check(s) failed (✗ above)", countFailed(rep))
	}
	return nil
}

// runFleetDoctor checks every watched database of every server (targets:, or
// database.dsn with its standbys), each under a heading, as the detector watches it:
// standbys without the WAL source, the response and the log (a primary's); servers
// watched with several databases without the WAL source, their statistics read
// through the primary DSN's own database, which is checked too (for the extension).
// With databases: all it checks that database (the detector lists the others when it
// starts). It goes on after a failure and
// fails at the end if any check did.
func runFleetDoctor(ctx context.Context, stdout io.Writer, cfg *config.Config) error {
	failed := 0
	for wi, w := range cfg.Watches() {
		own := "" // the primary's own database: every server's of the cluster (the detector's estate)
		for si, ws := range append([]config.WatchedServer{w.Primary}, w.Standbys...) {
			base, err := connConfigOf(ws.DSN, "the DSN of "+ws.Instance, "pgtripwire doctor")
			if err != nil {
				return err
			}
			if si == 0 {
				if own = base.Database; own == "" {
					own = base.User
				}
			}
			dbs := w.Databases
			if w.AllDatabases {
				dbs = []config.WatchedDatabase{{Name: own, Sensitive: w.Sensitive}}
			}
			shared := len(dbs) > 1 || w.AllDatabases
			if shared && !slices.ContainsFunc(dbs, func(d config.WatchedDatabase) bool { return d.Name == own }) {
				// The statistics database is not a watched one: it needs the extension
				// all the same, and its checks say so.
				dbs = append([]config.WatchedDatabase{{Name: own}}, dbs...)
			}
			for _, db := range dbs {
				c := base.Copy()
				c.Database = db.Name
				opts := doctorOptions(cfg, db.Sensitive)
				if si > 0 || shared {
					opts.WAL, opts.WALAuto = false, false
				}
				if si > 0 || wi > 0 {
					opts.Log = nil
				}
				if shared {
					opts.StatisticsIn = own
				}
				where := ws.Instance + "/" + db.Name
				if w.Cluster != "" {
					where = w.Cluster + "/" + where
				}
				fmt.Fprintf(stdout, "== %s\n", where)
				if err := runDoctor(ctx, stdout, cfg, c, ws.RedactedDSN(), opts); err != nil {
					fmt.Fprintf(stdout, "   %v\n", err)
					failed++
				}
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("doctor: %d database(s) failed their checks or could not be reached (✗ above)", failed)
	}
	return nil
}

func countFailed(r *doctor.Report) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == doctor.Fail {
			n++
		}
	}
	return n
}
