package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/discover"
)

const discoverHelp = `Find the columns that probably hold credentials (email addresses, user
names, password hashes, tokens, secrets) and print a ready-to-paste
"sensitive:" block, followed by comments with each column's evidence.

A column is a candidate by its name (email, username, login, password,
password_hash, pw, token, api_key, secret, ssn, ...; not email_verified or
password_updated_at) if its type can hold such a value (text, varchar, char,
citext, bytea, domains over them; uuid for tokens), or by the shape of its
sampled values: bcrypt, argon2, scrypt, yescrypt, PBKDF2, crypt(3) formats,
email addresses. The hash schemes found are named, and weak ones flagged:
bare MD5/SHA-1/SHA-256/SHA-512 digests (fast, no salt), bcrypt cost below 10,
md5-crypt, PBKDF2 below OWASP's iteration counts; password columns whose
values are in no known hash format are flagged for a check (plaintext?).
Columns worth a look but not listed (phone numbers, digests in columns whose
names say nothing) are listed in comments. No sampled value, nor any part of
one, is ever printed: only counts, scheme names and work factors.

Unlike "run", which reads only statistics views, discover reads up to --sample
rows of every table with text columns (TABLESAMPLE SYSTEM on big tables,
LIMIT on small ones), so its role needs SELECT on them; tables it may not read
are judged by name and listed as not sampled. --sample 0 reads no rows. The
session is read-only, each table is sampled in its own short statement
(30s statement timeout, 5s lock timeout), and nothing is written. It is meant
to be run once by an operator when writing the configuration, and again after
schema changes; review its output before pasting it.

The connection comes from --config (database.dsn, PGTRIPWIRE_DSN, PG*
variables). Without --config it comes from PGTRIPWIRE_DSN or the PG*
variables alone, for a first run before the configuration has the sensitive
list it requires.

Exit status: 0 when the database was examined (whatever was found), 1 when it
cannot be reached or read, 2 for bad usage or a bad configuration.`

func newDiscoverCommand(stdout io.Writer) *cobra.Command {
	var (
		path   string
		sample int
	)
	cmd := &cobra.Command{
		Use:   "discover [--config FILE] [--sample N]",
		Short: "Suggest the sensitive: configuration from column names and sampled value shapes",
		Long:  discoverHelp,
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sample < 0 || sample > discover.MaxSampleRows {
				return usageError{fmt.Errorf("--sample: got %d, want 0 to %d", sample, discover.MaxSampleRows)}
			}
			connConfig, err := discoverConnConfig(path)
			if err != nil {
				return err
			}
			conn, err := pgx.ConnectConfig(cmd.Context(), connConfig)
			if err != nil {
				return fmt.Errorf("connect to the database: %w", err)
			}
			defer conn.Close(context.WithoutCancel(cmd.Context()))
			rep, err := discover.Run(cmd.Context(), conn, discover.Options{SampleRows: sample})
			if err != nil {
				return err
			}
			return rep.Write(stdout)
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "path to the YAML configuration file (for its database connection)")
	cmd.Flags().IntVar(&sample, "sample", discover.DefaultSampleRows, "rows to sample per table; 0 judges by column names and types only")
	return cmd
}

func discoverConnConfig(path string) (*pgx.ConnConfig, error) {
	if path != "" {
		cfg, err := loadConfig(path)
		if err != nil {
			return nil, err
		}
		return oneOffConnConfig(cfg, "pgtripwire discover")
	}
	// The same DSN rules as the configuration's, without a file.
	cfg := config.Defaults()
	cfg.Database.DSN = strings.TrimSpace(os.Getenv(config.EnvDSN))
	connConfig, err := oneOffConnConfig(cfg, "pgtripwire discover")
	if err != nil {
		return nil, usageError{errors.New(config.EnvDSN + " (or the PG* variables) is not a valid connection string")}
	}
	return connConfig, nil
}
