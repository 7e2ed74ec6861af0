package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgtripwire/pgtripwire/detector/setup"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
)

const setupHelp = `Print, or with --apply run, the SQL that prepares a database for pgtripwire:

  - a login role (--role, default pgtripwire) with pg_monitor and no table
    privileges, and no password (set it yourself, as printed);
  - pg_stat_statements in the database;

and, only when sources.wal.enabled is true (the WAL source: committed changes,
DDL events, canary reads):

  - REPLICATION for the role;
  - REPLICA IDENTITY FULL on the sensitive tables (--no-replica-identity-full
    to skip: every UPDATE and DELETE then logs only the key, not the whole old
    row, and the detector cannot tell which sensitive columns changed);
  - the publication of the sensitive tables only (sources.wal.publication);
  - DDL event triggers that report security-relevant DDL (row security turned
    off, policies, publications, GRANT/REVOKE, SECURITY DEFINER functions, DDL
    on a sensitive table) on the replication stream, as source=ddl events;
  - the logical replication slot (sources.wal.slot). Without the WAL source
    nothing would consume it, and it would retain WAL until the disk is full.

The plan says, as a comment, what it left out. --apply refuses a schema
pgtripwire_ddl, or functions in it, that a role other than a superuser (or the
applying role) owns or may create in: the event triggers' SECURITY DEFINER
functions would be that role's to rewrite. The error names the owner and the fix.

Each statement says, as an SQL comment, which privilege it needs: together,
a superuser. --apply connects with --dsn, or else with the configuration's
database.dsn (PGTRIPWIRE_DSN, PG* variables) — usually the detector's own
role, which cannot do this: pass a superuser's DSN with --dsn. --apply skips
what is already in place and says, per step, what it created, updated or
found; running it twice is harmless. Nothing is ever dropped.

Exit status: 0 printed or applied, 1 when the database cannot be reached or a
step fails (the message names the step and the privilege it needs), 2 for bad
usage or a bad configuration.`

func newSetupCommand(stdout io.Writer) *cobra.Command {
	var (
		path, dsn, role string
		apply, noFull   bool
	)
	cmd := &cobra.Command{
		Use:   "setup --config FILE [--apply] [--dsn DSN] [--role NAME] [--no-replica-identity-full]",
		Short: "Print or apply the SQL that prepares the database: role, publication, slot, DDL triggers",
		Long:  setupHelp,
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireConfigFlag(path); err != nil {
				return err
			}
			if dsn != "" && !apply {
				return usageError{errors.New("--dsn is only used with --apply")}
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			w := wal.SettingsOf(cfg.Sources)
			opts := setup.Options{
				Role:                    role,
				Tables:                  cfg.Sensitive,
				Publication:             w.Publication,
				Slot:                    w.Slot,
				SkipReplicaIdentityFull: noFull,
				WAL:                     w.On(),
				HighAvailability:        cfg.HighAvailability.Enabled,
			}
			steps, err := setup.Plan(opts)
			if err != nil {
				return usageError{err}
			}
			if !apply {
				return setup.WritePlan(stdout, steps, opts)
			}
			if dsn != "" {
				cfg.Database.DSN = dsn
			}
			connConfig, err := oneOffConnConfig(cfg, "pgtripwire setup")
			if err != nil {
				return err
			}
			conn, err := pgx.ConnectConfig(cmd.Context(), connConfig)
			if err != nil {
				return fmt.Errorf("connect to the database: %w", err)
			}
			defer conn.Close(context.WithoutCancel(cmd.Context()))
			results, err := setup.Apply(cmd.Context(), conn, steps)
			if werr := setup.WriteResults(stdout, results); werr != nil && err == nil {
				err = werr
			}
			if err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			_, err = io.WriteString(stdout, opts.OmittedComment()+setup.PasswordHelp(roleOrDefault(role)))
			return err
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "path to the YAML configuration file (sensitive tables, publication and slot names)")
	cmd.Flags().BoolVar(&apply, "apply", false, "run the plan (idempotently) instead of printing it")
	cmd.Flags().StringVar(&dsn, "dsn", "", "with --apply: connect with this DSN (a superuser's) instead of the configuration's")
	cmd.Flags().StringVar(&role, "role", setup.DefaultRole, "the detector's login role")
	cmd.Flags().BoolVar(&noFull, "no-replica-identity-full", false, "leave the sensitive tables' replica identity alone")
	return cmd
}

func roleOrDefault(role string) string {
	if role == "" {
		return setup.DefaultRole
	}
	return role
}
