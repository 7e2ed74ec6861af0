package main

import (
	"context"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/doctor"
	"github.com/pgtripwire/pgtripwire/detector/source"
	logsource "github.com/pgtripwire/pgtripwire/detector/source/log"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
)

const doctorHelp = `Check that the server and database are set up so that pgtripwire can see,
as the role of database.dsn (run it with the detector's own configuration):
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
			connConfig, err := oneOffConnConfig(cfg, "pgtripwire doctor")
			if err != nil {
				return err
			}
			conn, err := pgx.ConnectConfig(cmd.Context(), connConfig)
			if err != nil {
				fmt.Fprintf(stdout, "✗ connect: %s\n", cfg.RedactedDSN())
				return fmt.Errorf("connect to the database: %w", err)
			}
			defer conn.Close(context.WithoutCancel(cmd.Context()))
			w := wal.SettingsOf(cfg.Sources)
			opts := doctor.Options{
				Tables:      cfg.Sensitive,
				WAL:         w.On(),
				WALAuto:     w.Enabled == wal.Auto,
				Slot:        w.Slot,
				Publication: w.Publication,
			}
			if l, ok := source.Lookup[*logsource.Settings](cfg.Sources, logsource.Name); ok && l.On() {
				opts.Log = &doctor.LogOptions{Directory: l.Directory, Format: l.Format, SyslogListen: l.Syslog.Listen}
			}
			opts.Automatic = cfg.Response.Automatic == config.ResponseOn
			if cfg.Response.DSN != "" {
				rc, err := responderConn(cmd.Context(), cfg, "pgtripwire doctor")
				if err != nil {
					opts.ResponderErr = err
				} else {
					defer rc.Close(context.WithoutCancel(cmd.Context()))
					opts.Responder = rc
				}
			}
			rep, err := doctor.Run(cmd.Context(), conn, opts)
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
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "path to the YAML configuration file")
	return cmd
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
