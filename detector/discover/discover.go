// Package discover finds the columns of a PostgreSQL database that probably
// hold credentials — email addresses, user names, password hashes, tokens,
// secrets — so that an operator can write pgtripwire's `sensitive:`
// configuration without reading every schema by hand. It judges a column by
// its name and type and by the shape of a few sampled values (bcrypt,
// argon2, scrypt, PBKDF2, crypt(3) formats, bare hex digests, email
// addresses), names the password-hash schemes it sees and flags the weak
// ones.
//
// It is a one-off tool for an operator, not part of the detector: unlike the
// daemon, which reads only statistics views, it reads a few rows of every
// table with text-like columns, so its role needs SELECT on them. Sampled
// values stay in memory only long enough to be matched against the shapes;
// the Report holds counts, scheme names and work factors, never a value or a
// part of one.
package discover

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtripwire/pgtripwire/model"
)

// DefaultSampleRows is how many rows per table Run samples unless told
// otherwise.
const DefaultSampleRows = 100

// MaxSampleRows bounds Options.SampleRows: more rows do not make a shape
// clearer, they only read more credentials into memory.
const MaxSampleRows = 10_000

// Session limits: sampling must not hang on a locked table or run long on a
// huge one. Each table is sampled in its own statement (autocommit), so no
// lock or snapshot is held from one table to the next.
const (
	statementTimeout = "30s"
	lockTimeout      = "5s"
)

// Options tune Run.
type Options struct {
	// SampleRows is how many rows per table are examined; 0 turns sampling
	// off (names and types only, no SELECT privilege needed). At most
	// MaxSampleRows.
	SampleRows int
}

// Report is what Run found. It holds no sampled value.
type Report struct {
	// Database is the name of the database examined.
	Database string
	// SampleRows is Options.SampleRows.
	SampleRows int
	// Columns are the columns with any evidence, sorted by schema, table and
	// column name.
	Columns []Column
	// Unsampled are the tables (schema-qualified) whose values could not be
	// read, with why; their columns were judged by name only. Sorted.
	Unsampled []Unsampled
}

// Column is one column with evidence that it holds credentials.
type Column struct {
	Schema, Table, Name string
	// Type is the column's type as format_type prints it.
	Type string
	// NameKind is what the column's name suggests; KindNone when nothing.
	NameKind Kind
	// Sampled is how many non-null values were examined.
	Sampled int
	// Emails is how many sampled values are shaped like email addresses.
	Emails int
	// Hashes are the password-hash formats among the sampled values, most
	// frequent first.
	Hashes []HashCount
	// Unrecognised is, for a column whose name says password, how many
	// sampled values are in no known hash format: plaintext, reversible
	// encryption, or a format discover does not know.
	Unrecognised int
	// Listed says the column belongs in the sensitive block. Unlisted
	// columns are worth a look (phone numbers, digests in a column whose
	// name says nothing) but are not credentials on the evidence alone.
	Listed bool
	// Weak says why the column's password hashing is weak, one reason per
	// scheme; empty when it is not or when the column holds no password
	// hashes.
	Weak []string

	// examined says the column's values were read (Sampled may still be 0:
	// an empty table, a column of NULLs).
	examined bool
}

// Qualified is schema.table as PostgreSQL would quote it.
func (c *Column) Qualified() string { return model.QualifiedName(c.Schema, c.Table) }

// HashCount is how many sampled values of a column are in one hash scheme,
// and the range of the scheme's work factor (bcrypt cost, PBKDF2
// iterations; 0 for schemes without one).
type HashCount struct {
	Scheme           string
	Count            int
	MinCost, MaxCost int
}

// Unsampled is a table whose values were not examined.
type Unsampled struct {
	Table  string
	Reason string
}

// columnsQuery lists the user columns of every ordinary and partitioned
// table outside the system schemas, with the base type of domains and
// whether the session may read each column. Partitions are left out: their
// parent is the table to configure, and reading through it covers them.
const columnsQuery = `
SELECT n.nspname::text, c.relname::text, c.reltuples::float8,
       a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod),
       COALESCE(bt.typname, t.typname)::text,
       pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT')
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_(toast|temp_)'
 ORDER BY 1, 2, a.attnum`

// textTypes can hold an email address, a user name or a hash; only columns
// of these (base) types are considered, which is what keeps email_verified
// boolean and password_updated_at timestamptz out.
var textTypes = map[string]bool{"text": true, "varchar": true, "bpchar": true, "citext": true, "bytea": true}

// column is a column under examination.
type column struct {
	Column
	baseType string
	readable bool
	stats    columnStats
}

type table struct {
	schema, name string
	reltuples    float64
	columns      []*column
}

// Run examines the database conn is connected to. It changes conn's session
// to read-only with a statement and lock timeout, so conn should be a
// connection of its own. A table that cannot be sampled (no privilege, a
// timeout) is reported in Report.Unsampled and does not fail the run; a
// failed catalog query, a lost connection or a cancelled ctx do.
func Run(ctx context.Context, conn *pgx.Conn, opts Options) (Report, error) {
	if opts.SampleRows < 0 || opts.SampleRows > MaxSampleRows {
		return Report{}, fmt.Errorf("sample rows: got %d, want 0 to %d", opts.SampleRows, MaxSampleRows)
	}
	rep := Report{SampleRows: opts.SampleRows}
	err := conn.QueryRow(ctx, `
		SELECT pg_catalog.current_database()::text,
		       pg_catalog.set_config('default_transaction_read_only', 'on', false),
		       pg_catalog.set_config('statement_timeout', $1, false),
		       pg_catalog.set_config('lock_timeout', $2, false)`,
		statementTimeout, lockTimeout).Scan(&rep.Database, nil, nil, nil)
	if err != nil {
		return Report{}, fmt.Errorf("discover: prepare session: %w", err)
	}
	tables, err := listColumns(ctx, conn)
	if err != nil {
		return Report{}, err
	}
	for _, t := range tables {
		if opts.SampleRows > 0 {
			reason, err := sample(ctx, conn, t, opts.SampleRows)
			if err != nil {
				return Report{}, err
			}
			if reason != "" {
				rep.Unsampled = append(rep.Unsampled, Unsampled{Table: model.QualifiedName(t.schema, t.name), Reason: reason})
			}
		}
		for _, c := range t.columns {
			if judge(c) {
				rep.Columns = append(rep.Columns, c.Column)
			}
		}
	}
	slices.SortFunc(rep.Columns, func(a, b Column) int {
		return cmp.Or(cmp.Compare(a.Schema, b.Schema), cmp.Compare(a.Table, b.Table), cmp.Compare(a.Name, b.Name))
	})
	return rep, nil
}

func listColumns(ctx context.Context, conn *pgx.Conn) ([]*table, error) {
	rows, err := conn.Query(ctx, columnsQuery)
	if err != nil {
		return nil, fmt.Errorf("discover: list columns: %w", err)
	}
	var (
		tables []*table
		cur    *table
	)
	for rows.Next() {
		var (
			schema, name string
			reltuples    float64
			c            column
		)
		if err := rows.Scan(&schema, &name, &reltuples, &c.Name, &c.Type, &c.baseType, &c.readable); err != nil {
			rows.Close()
			return nil, fmt.Errorf("discover: list columns: %w", err)
		}
		if cur == nil || cur.schema != schema || cur.name != name {
			cur = &table{schema: schema, name: name, reltuples: reltuples}
			tables = append(tables, cur)
		}
		c.Schema, c.Table = schema, name
		c.NameKind = kindOfName(c.Name)
		uuidSecret := c.baseType == "uuid" && c.NameKind == KindSecret
		if !textTypes[c.baseType] && !uuidSecret {
			continue
		}
		cur.columns = append(cur.columns, &c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("discover: list columns: %w", err)
	}
	return tables, nil
}

// sample reads up to n rows of t's readable text-like columns and records
// their shapes. It returns why t could not be sampled ("" when it was), or
// an error that should end the run.
func sample(ctx context.Context, conn *pgx.Conn, t *table, n int) (string, error) {
	var (
		cols        []*column
		exprs       []string
		allReadable = true
	)
	for _, c := range t.columns {
		if !textTypes[c.baseType] {
			continue // uuid secrets: the name says it all
		}
		if !c.readable {
			allReadable = false
			continue
		}
		id := pgx.Identifier{c.Name}.Sanitize()
		if c.baseType == "bytea" {
			exprs = append(exprs, fmt.Sprintf("substring(%s from 1 for %d)", id, maxValueLen+1))
		} else {
			exprs = append(exprs, fmt.Sprintf("left(%s::text, %d)", id, maxValueLen+1))
		}
		cols = append(cols, c)
	}
	reason := ""
	if !allReadable {
		reason = "no SELECT privilege on some of its text columns"
	}
	if len(cols) == 0 {
		return reason, nil
	}

	from := pgx.Identifier{t.schema, t.name}.Sanitize()
	query := fmt.Sprintf("SELECT %s FROM %s", strings.Join(exprs, ", "), from)
	// A plain LIMIT reads the first pages only: fine for small tables, but
	// on a big one the oldest rows may not show what the rest holds (hashes
	// migrated to a new scheme). TABLESAMPLE SYSTEM picks random pages
	// without reading the others.
	if t.reltuples > float64(10*n) {
		pct := max(100*float64(10*n)/t.reltuples, 0.0001)
		sampled := fmt.Sprintf("%s TABLESAMPLE SYSTEM (%s) LIMIT %d", query, strconv.FormatFloat(pct, 'f', 4, 64), n)
		got, err := readSample(ctx, conn, sampled, cols)
		if err != nil || got > 0 {
			return sampleReason(ctx, err, reason)
		}
		// An unlucky draw of empty pages: fall back to the first rows.
	}
	_, err := readSample(ctx, conn, fmt.Sprintf("%s LIMIT %d", query, n), cols)
	return sampleReason(ctx, err, reason)
}

func readSample(ctx context.Context, conn *pgx.Conn, query string, cols []*column) (int, error) {
	rows, err := conn.Query(ctx, query)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	vals := make([][]byte, len(cols))
	dest := make([]any, len(cols))
	for i := range vals {
		dest[i] = &vals[i]
	}
	got := 0
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return got, err
		}
		for i, c := range cols {
			c.stats.observe(vals[i], c.baseType == "bytea")
		}
		got++
	}
	if err := rows.Err(); err != nil {
		return got, err
	}
	for _, c := range cols {
		c.examined = true
	}
	return got, nil
}

// sampleReason turns a sampling error into the reason the table was not
// sampled, or into an error that ends the run when it is not about the
// table (cancellation, a lost connection). PostgreSQL's message is not
// quoted: only the condition is named, so no value can leak through it.
func sampleReason(ctx context.Context, err error, reason string) (string, error) {
	if err == nil {
		return reason, nil
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return "", fmt.Errorf("discover: sample: %w", err)
	}
	switch pgErr.Code {
	case "42501":
		return "no SELECT privilege", nil
	case "57014":
		return "sampling took longer than " + statementTimeout, nil
	case "55P03":
		return "table locked for longer than " + lockTimeout, nil
	}
	return "sampling failed with SQLSTATE " + pgErr.Code, nil
}

// judge fills in c's evidence from its name and sampled values and reports
// whether it has any.
func judge(c *column) bool {
	s := &c.stats
	c.Sampled, c.Emails = s.nonNull, s.emails
	for _, h := range s.hashes {
		c.Hashes = append(c.Hashes, *h)
	}
	slices.SortFunc(c.Hashes, func(a, b HashCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Scheme, b.Scheme))
	})

	strongHashes := most(s.hashed-s.digests, s.nonNull)
	switch c.NameKind {
	case KindEmail, KindUsername, KindPassword, KindSecret, KindSSN:
		c.Listed = true
	case KindNone:
		c.Listed = most(s.emails, s.nonNull) || strongHashes
	}
	// Digests are password hashes when the name says password, and may be
	// when the name says nothing: a checksum or a commit id look the same;
	// in a token column they are tokens; in a column whose name says
	// nothing they are reported as a maybe, not as weak hashing.
	passwords := c.NameKind == KindPassword || (c.NameKind == KindNone && strongHashes)
	if passwords {
		for _, h := range c.Hashes {
			if w := weakness(h.Scheme, h.MinCost); w != "" {
				c.Weak = append(c.Weak, w)
			}
		}
		c.Weak = slices.Compact(c.Weak)
	}
	if c.NameKind == KindPassword {
		c.Unrecognised = s.nonNull - s.hashed - s.emails
	}
	return c.NameKind != KindNone || c.Listed || most(s.hashed, s.nonNull)
}

// Tables returns the sensitive block's content: schema-qualified table
// names, each with its listed columns sorted, tables sorted.
func (r *Report) Tables() []SensitiveTable {
	var out []SensitiveTable
	for _, c := range r.Columns {
		if !c.Listed {
			continue
		}
		q := c.Qualified()
		if len(out) == 0 || out[len(out)-1].Table != q {
			out = append(out, SensitiveTable{Table: q})
		}
		last := &out[len(out)-1]
		last.Columns = append(last.Columns, c.Name)
	}
	for i := range out {
		slices.Sort(out[i].Columns)
	}
	slices.SortFunc(out, func(a, b SensitiveTable) int { return cmp.Compare(a.Table, b.Table) })
	return out
}

// SensitiveTable is one entry of the sensitive block: a schema-qualified
// table (quoted as PostgreSQL would) and column names as PostgreSQL stores
// them.
type SensitiveTable struct {
	Table   string
	Columns []string
}
