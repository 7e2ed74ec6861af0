package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/detector/config"
)

// maxStdinStatement bounds one line of `classify -`: pg_stat_statements
// texts are rarely longer than a few kilobytes.
const maxStdinStatement = 16 << 20

// connectTimeout bounds a connection attempt of the one-off commands, which
// would otherwise wait for the kernel's TCP timeout on an unreachable host.
const connectTimeout = 10 * time.Second

const classifyHelp = `Classify SQL statements the way the detector does and print one JSON object
per statement, one per line:

  {"operation":"SELECT","relations":["public.users"],
   "sensitive_read":["public.users.email"],"sensitive_referenced":[],
   "complete":true}

with "problems" (why a result is incomplete) and "name" (a cursor or prepared
statement name) when they apply, and, when there are any:

  "access": how the statement reaches the rows of each sensitive table it
            reads or references: "point" (equality on every column of a
            unique index or the primary key: one row, such as a login),
            "range", "page" (OFFSET, or LIMIT alone) or "scan"; a table it
            cannot judge is left out;
  "shapes": what it does beyond the columns: "folded" (many rows' values in
            one), "server_file", "catalog_columns", "catalog_roles",
            "dynamic_sql".

docs/classification.md defines them and what a static classifier cannot see.

Each argument is one SQL text (it may hold several statements, classified
together); "-" reads texts from standard input, one per line, skipping empty
lines.

With --config, the catalog (tables, views, materialized views, functions) is
loaded from the configured database with the configured sensitive columns and
database.search_path; --search-path and --role override them. "$user" in the
search path stands for --role, by default the user the configuration connects
as. Without --config there is no catalog: every relation is unknown and every
result is incomplete ("complete": false).

Exit status: 0 when every text was classified (an incomplete result is still
a classification), 1 when the database cannot be reached or read, 2 for bad
usage or a bad configuration.`

type classifyFlags struct {
	configPath string
	role       string
	searchPath string
}

func newClassifyCommand(stdout, stderr io.Writer) *cobra.Command {
	f := &classifyFlags{}
	cmd := &cobra.Command{
		Use:   "classify [--config FILE] [--role ROLE] [--search-path a,b] SQL... | -",
		Short: "Print what SQL statements read and reference, as JSON",
		Long:  classifyHelp,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New(`classify needs at least one SQL text, or "-" to read them from standard input`)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClassify(cmd, f, args, stdout, stderr)
		},
	}
	cmd.Flags().StringVar(&f.configPath, "config", "", "path to the YAML configuration file (loads the catalog from its database)")
	cmd.Flags().StringVar(&f.role, "role", "", `role that "$user" in the search path stands for (default: the user the configuration connects as)`)
	cmd.Flags().StringVar(&f.searchPath, "search-path", "", `comma-separated schemas for unqualified names, as search_path is written (default: database.search_path, or "$user", public)`)
	return cmd
}

func runClassify(cmd *cobra.Command, f *classifyFlags, args []string, stdout, stderr io.Writer) error {
	searchPath := []string{"$user", "public"}
	if cmd.Flags().Changed("search-path") {
		var err error
		if searchPath, err = parseSearchPathFlag(f.searchPath); err != nil {
			return usageError{fmt.Errorf("--search-path: %w", err)}
		}
	}
	role := f.role

	var snap *catalog.Snapshot
	if f.configPath == "" {
		fmt.Fprintln(stderr, "pgtripwire: no --config: no catalog, every relation is unknown")
	} else {
		cfg, err := loadConfig(f.configPath)
		if err != nil {
			return err
		}
		if !cmd.Flags().Changed("search-path") {
			searchPath = cfg.Database.SearchPath
		}
		connConfig, err := oneOffConnConfig(cfg, "pgtripwire classify")
		if err != nil {
			return err
		}
		if !cmd.Flags().Changed("role") {
			role = connConfig.User
		}
		if snap, err = loadCatalog(cmd.Context(), connConfig, cfg); err != nil {
			return err
		}
		for _, m := range snap.Missing() {
			fmt.Fprintf(stderr, "pgtripwire: configured as sensitive but not in the database: %s\n", m)
		}
	}

	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	classifyOne := func(sql string) error {
		res := classify.Classify(sql, snap, searchPath, role)
		// The contract promises arrays, never null.
		for _, s := range []*[]string{&res.Relations, &res.SensitiveRead, &res.SensitiveReferenced} {
			if *s == nil {
				*s = []string{}
			}
		}
		if err := enc.Encode(res); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
		return nil
	}
	for _, arg := range args {
		if arg != "-" {
			if err := classifyOne(arg); err != nil {
				return err
			}
			continue
		}
		lines := bufio.NewScanner(cmd.InOrStdin())
		lines.Buffer(make([]byte, 0, 64<<10), maxStdinStatement)
		for lines.Scan() {
			if strings.TrimSpace(lines.Text()) == "" {
				continue
			}
			if err := classifyOne(lines.Text()); err != nil {
				return err
			}
		}
		if err := lines.Err(); err != nil {
			return fmt.Errorf("read statements from standard input: %w", err)
		}
	}
	return nil
}

// oneOffConnConfig builds the connection of a one-off command from the
// configuration: its DSN (PGTRIPWIRE_DSN and the PG* variables included), a
// bounded connect timeout and an application_name that tells a DBA who is
// connected.
func oneOffConnConfig(cfg *config.Config, application string) (*pgx.ConnConfig, error) {
	if cfg.Fleet() && cfg.Database.DSN == "" {
		// Not the PG* defaults: they may be another server than any of the fleet's.
		return nil, usageError{errors.New("the configuration watches targets:, not one database.dsn: " +
			"give the database to act on with --dsn (setup --apply, canary), or use a configuration of that one database")}
	}
	return connConfigOf(cfg.Database.DSN, "database.dsn (or PGTRIPWIRE_DSN / PG* variables)", application)
}

// connConfigOf parses dsn (what names it in an error) with a bounded connect timeout
// and application as application_name.
func connConfigOf(dsn, what, application string) (*pgx.ConnConfig, error) {
	connConfig, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN; the config package has already
		// validated it, so this is an environment change (a service file).
		return nil, usageError{fmt.Errorf("%s is not a valid connection string", what)}
	}
	if connConfig.ConnectTimeout == 0 {
		connConfig.ConnectTimeout = connectTimeout
	}
	connConfig.RuntimeParams["application_name"] = application
	return connConfig, nil
}

// loadCatalog connects, loads the catalog snapshot with the configured
// sensitive columns and disconnects.
func loadCatalog(ctx context.Context, connConfig *pgx.ConnConfig, cfg *config.Config) (*catalog.Snapshot, error) {
	conn, err := pgx.ConnectConfig(ctx, connConfig)
	if err != nil {
		// pgconn's connect errors name host, user and database, never the
		// password.
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sensitive := make(map[string][]string, len(cfg.Sensitive))
	for _, t := range cfg.Sensitive {
		sensitive[t.Table] = append(sensitive[t.Table], t.Columns...)
	}
	snap, err := catalog.Load(ctx, conn, sensitive)
	if err != nil {
		return nil, err
	}
	return snap, nil
}

// parseSearchPathFlag reads a search path written as in SQL ("$user",
// public, "My Schema"): unquoted names fold to lower case. An empty value is
// an empty path.
func parseSearchPathFlag(s string) ([]string, error) {
	path := []string{}
	for item := range splitOutsideQuotes(s) {
		item = strings.TrimSpace(item)
		switch item {
		case "":
			if strings.TrimSpace(s) != "" {
				return nil, fmt.Errorf("empty entry in %q", s)
			}
			continue
		case "$user", `"$user"`:
			path = append(path, "$user")
			continue
		}
		name, err := catalog.ParseIdentifier(item)
		if err != nil {
			return nil, err
		}
		path = append(path, name)
	}
	return path, nil
}

// splitOutsideQuotes yields the comma-separated items of s, ignoring commas
// inside double-quoted identifiers.
func splitOutsideQuotes(s string) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		quoted, start := false, 0
		for i := 0; i < len(s); i++ {
			switch s[i] {
			case '"':
				quoted = !quoted
			case ',':
				if !quoted {
					if !yield(s[start:i]) {
						return
					}
					start = i + 1
				}
			}
		}
		yield(s[start:])
	}
}
