package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/detector/config"
)

const canaryHelp = `Plant, list and remove honeytoken (canary) rows: fake accounts in a sensitive
table that no legitimate code path reads. A restrictive row level security
policy, true for every row, makes any read that reaches a canary row emit a
logical decoding message naming the session; the detector's WAL source turns
it into a canary_read event. See docs/canary.md for how the policy combines with
existing ones, its limits and how to choose the canary mail domain.

These commands change the database: they need a superuser connection. It is
--dsn when given (the configuration's database.dsn then names the detector's
role, which plant grants the reads its tamper check needs), otherwise the
configuration's database.dsn. Passwords are never printed.`

type canaryFlags struct {
	config string
	dsn    string
}

func newCanaryCommand(stdout io.Writer) *cobra.Command {
	f := &canaryFlags{}
	cmd := &cobra.Command{
		Use:   "canary",
		Short: "Plant, list and remove honeytoken rows that page on any full read of a table",
		Long:  canaryHelp,
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			return usageError{errors.New("a canary command is required: plant, list or remove")}
		},
	}
	cmd.PersistentFlags().StringVar(&f.config, "config", "", "path to the YAML configuration file")
	cmd.PersistentFlags().StringVar(&f.dsn, "dsn", "", "superuser connection string (default: the configuration's database.dsn)")
	cmd.AddCommand(newCanaryPlantCommand(f, stdout), newCanaryListCommand(f, stdout), newCanaryRemoveCommand(f, stdout))
	return cmd
}

func newCanaryPlantCommand(f *canaryFlags, stdout io.Writer) *cobra.Command {
	var (
		table  string
		count  int
		domain string
	)
	cmd := &cobra.Command{
		Use:   "plant --config FILE --table SCHEMA.TABLE --domain DOMAIN [--count N] [--dsn DSN]",
		Short: "Add canary rows to a table and arm the row level security tripwire",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if table == "" {
				return usageError{errors.New("--table SCHEMA.TABLE is required")}
			}
			if count < 1 || count > canary.MaxCount {
				return usageError{fmt.Errorf("--count: got %d, want 1 to %d", count, canary.MaxCount)}
			}
			if domain == "" {
				return usageError{errors.New("--domain is required: a mail domain you control and watch, used by no real person (see docs/canary.md)")}
			}
			conn, cfg, err := canaryConnect(cmd.Context(), f, "pgtripwire canary plant")
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(cmd.Context()))
			opts := canary.Options{Table: table, Count: count, Domain: domain}
			if detectorRole := detectorUser(cfg); f.dsn != "" && detectorRole != "" && detectorRole != conn.Config().User {
				opts.Readers = []string{detectorRole}
			}
			p, err := canary.Plant(cmd.Context(), conn, opts)
			if err != nil {
				return err
			}
			for _, c := range p.Canaries {
				fmt.Fprintln(stdout, "planted", c.ID)
			}
			if p.AllowPolicy {
				fmt.Fprintf(stdout, "added permissive policy %s to %s (it had none that kept its rows visible)\n", canary.AllowPolicyName, p.Relation)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&table, "table", "", "schema-qualified table, e.g. public.users")
	cmd.Flags().IntVar(&count, "count", canary.DefaultCount, "canary rows to add")
	cmd.Flags().StringVar(&domain, "domain", "", "mail domain of the canary addresses (required)")
	return cmd
}

func newCanaryListCommand(f *canaryFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "list --config FILE [--dsn DSN]",
		Short: "List the planted canaries (reads the registry only: trips nothing)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, _, err := canaryConnect(cmd.Context(), f, "pgtripwire canary list")
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(cmd.Context()))
			list, err := canary.List(cmd.Context(), conn)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tTABLE\tKEY\tPLANTED")
			for _, c := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.ID, c.Relation, c.Key, c.Created)
			}
			return w.Flush()
		},
	}
}

func newCanaryRemoveCommand(f *canaryFlags, stdout io.Writer) *cobra.Command {
	var table string
	cmd := &cobra.Command{
		Use:   "remove --config FILE --table SCHEMA.TABLE [--dsn DSN]",
		Short: "Delete a table's canary rows and restore its row level security as it was",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if table == "" {
				return usageError{errors.New("--table SCHEMA.TABLE is required")}
			}
			conn, _, err := canaryConnect(cmd.Context(), f, "pgtripwire canary remove")
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(cmd.Context()))
			rm, err := canary.Remove(cmd.Context(), conn, table)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "removed %d canary rows from %s\n", rm.Rows, rm.Relation)
			if rm.RegistryDropped {
				fmt.Fprintf(stdout, "no canaries left: dropped schema %s\n", canary.Schema)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&table, "table", "", "schema-qualified table, e.g. public.users")
	return cmd
}

// canaryConnect connects with --dsn or the configuration's DSN.
func canaryConnect(ctx context.Context, f *canaryFlags, application string) (*pgx.Conn, *config.Config, error) {
	if err := requireConfigFlag(f.config); err != nil {
		return nil, nil, err
	}
	cfg, err := loadConfig(f.config)
	if err != nil {
		return nil, nil, err
	}
	connCfg := cfg
	if f.dsn != "" {
		c := *cfg
		c.Database.DSN = f.dsn
		connCfg = &c
	}
	cc, err := oneOffConnConfig(connCfg, application)
	if err != nil {
		if f.dsn != "" {
			return nil, nil, usageError{errors.New("--dsn is not a valid connection string")}
		}
		return nil, nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		// pgconn's connect errors name host, user and database, never the password.
		return nil, nil, fmt.Errorf("connect to the database: %w", err)
	}
	return conn, cfg, nil
}

// detectorUser is the role of the configuration's DSN, "" if it cannot be told.
func detectorUser(cfg *config.Config) string {
	cc, err := pgx.ParseConfig(cfg.Database.DSN)
	if err != nil {
		return ""
	}
	return cc.User
}
