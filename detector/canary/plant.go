package canary

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/pgtripwire/pgtripwire/detector/pgversion"
	"github.com/pgtripwire/pgtripwire/detector/setup/ownership"
)

// DefaultCount is how many canary rows Plant adds when Options.Count is zero.
const DefaultCount = 3

// MaxCount bounds Options.Count: the keys are written into the policy's text.
const MaxCount = 100

// Options says where to plant and what the canaries look like.
type Options struct {
	// Table is the schema-qualified table, written as in SQL: public.users,
	// "My Schema"."Users". It must have a single-column primary key.
	Table string
	// Count is the number of canary rows to add (DefaultCount when zero).
	Count int
	// Domain is the mail domain of the canary addresses. Required: it should be one
	// whose incoming mail the operator watches and that is no real person's, so that a
	// leaked copy of the table trips a second wire when someone mails the addresses.
	Domain string
	// Readers are roles granted what the tamper check (Source) needs: USAGE on the
	// registry schema and SELECT on its table of planted tables (not on the list of
	// canary keys). Typically the detector's role.
	Readers []string
	// Now is the planting time: a created-like column of a canary in a table with no
	// row to copy timestamps from is dated up to a year before it; nil means
	// time.Now. Tests only.
	Now func() time.Time
}

// Planted is what Plant did.
type Planted struct {
	Relation string
	// Canaries are the rows added by this call.
	Canaries []Canary
	// AllowPolicy is true when Plant added the permissive AllowPolicyName policy
	// (the table had no policy that would keep its rows visible).
	AllowPolicy bool
}

// tableState is what Plant and Remove read about the table before changing it.
type tableState struct {
	oid        uint32
	name       string // schema-qualified, quoted as PostgreSQL prints regclass
	ident      string // the same, safe to paste into SQL
	owner      string // the owner's role name, unquoted
	rlsEnabled bool
	rlsForced  bool
	keyColumn  string
	keyType    string // format_type of the key column
}

// Plant adds opts.Count canary rows to opts.Table, spread over the table's key and
// address orders with a real row's timestamps where the table allows (spreader), and
// arms the tripwire: the function,
// the restrictive policy listing every canary of the table, ENABLE and FORCE row level
// security, and the registry rows that Remove and Source rely on. It runs in one
// transaction on conn, which must be a superuser's (pg_logical_emit_message is
// superuser-only unless granted, and the function runs with its owner's rights);
// nothing is changed when it fails. Planting again in the same table adds rows and
// keeps the state recorded by the first Plant.
//
// The table briefly takes an ACCESS EXCLUSIVE lock (ALTER TABLE, CREATE POLICY); Plant
// waits at most 5 s for it.
func Plant(ctx context.Context, conn *pgx.Conn, opts Options) (*Planted, error) {
	if opts.Count == 0 {
		opts.Count = DefaultCount
	}
	if opts.Count < 1 || opts.Count > MaxCount {
		return nil, fmt.Errorf("plant canaries: count %d: want 1 to %d", opts.Count, MaxCount)
	}
	if err := checkDomain(opts.Domain); err != nil {
		return nil, fmt.Errorf("plant canaries: %w", err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var out *Planted
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		out, err = plant(ctx, tx, opts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("plant canaries in %s: %w", opts.Table, err)
	}
	return out, nil
}

func plant(ctx context.Context, tx pgx.Tx, opts Options) (*Planted, error) {
	if err := prepareTx(ctx, tx); err != nil {
		return nil, err
	}
	var mayEmit bool
	// PostgreSQL 17 added the flush argument, which the function uses there.
	if err := tx.QueryRow(ctx, `SELECT has_function_privilege(current_user,
		CASE WHEN `+pgversion.EmitMessageFlush.SQL()+`
			THEN 'pg_logical_emit_message(boolean,text,text,boolean)'
			ELSE 'pg_logical_emit_message(boolean,text,text)' END, 'EXECUTE')`).Scan(&mayEmit); err != nil {
		return nil, fmt.Errorf("check privileges: %w", err)
	}
	if !mayEmit {
		return nil, errors.New("this role may not execute pg_logical_emit_message: plant as a superuser (the canary function runs with the rights of the role that plants)")
	}
	// CREATE SCHEMA IF NOT EXISTS and CREATE OR REPLACE FUNCTION keep the owner of
	// what exists: had a role with CREATE on the database made the schema or the
	// function first, the policy would call a SECURITY DEFINER function that role
	// can rewrite. Refused rather than adopted with ALTER ... OWNER: objects of
	// unknown history (other functions, tables, grants) would be taken over and a
	// likely sign of compromise hidden; the error names the owner and the fix.
	if err := ownership.Check(ctx, tx, Schema); err != nil {
		return nil, err
	}
	st, err := lockTable(ctx, tx, opts.Table)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, registrySQL); err != nil {
		return nil, fmt.Errorf("create the registry: %w", err)
	}

	// Earlier canaries of this table, and the state recorded before the first plant.
	var (
		already      bool
		allowPolicy  bool
		enabledFirst = st.rlsEnabled
		forcedFirst  = st.rlsForced
	)
	err = tx.QueryRow(ctx, `SELECT rls_enabled_before, rls_forced_before, allow_policy
		FROM `+Schema+`.planted WHERE relation = $1::oid`, st.oid).Scan(&enabledFirst, &forcedFirst, &allowPolicy)
	switch {
	case err == nil:
		already = true
	case errors.Is(err, pgx.ErrNoRows):
	default:
		return nil, fmt.Errorf("read the registry: %w", err)
	}

	if already {
		// Dropped first so that the reads and inserts below do not trip it.
		if _, err := tx.Exec(ctx, `DROP POLICY IF EXISTS `+PolicyName+` ON `+st.ident); err != nil {
			return nil, fmt.Errorf("drop the canary policy: %w", err)
		}
	} else {
		allowPolicy, err = decideAllowPolicy(ctx, tx, st)
		if err != nil {
			return nil, err
		}
	}

	cols, err := loadColumns(ctx, tx, st)
	if err != nil {
		return nil, err
	}
	cost, err := bcryptCost(ctx, tx, st, cols)
	if err != nil {
		return nil, err
	}
	out := &Planted{Relation: st.name, AllowPolicy: allowPolicy && !already}
	gen := newPersonas()
	spread, err := newSpreader(ctx, tx, st, cols, opts.Count)
	if err != nil {
		return nil, err
	}
	for i := range opts.Count {
		pl, err := spread.place(ctx, tx, i, gen, opts.Domain)
		if err != nil {
			return nil, err
		}
		key, err := insertCanary(ctx, tx, st, cols, pl, spread.key, cost, opts.Now())
		if err != nil {
			return nil, err
		}
		out.Canaries = append(out.Canaries, Canary{ID: canaryID(st.name, key), Relation: st.name, Key: key})
	}

	if _, err := tx.Exec(ctx, functionSQL); err != nil {
		return nil, fmt.Errorf("create the canary function: %w", err)
	}
	if out.AllowPolicy {
		if err := createAllowPolicy(ctx, tx, st); err != nil {
			return nil, err
		}
	}
	if !already {
		if _, err := tx.Exec(ctx, `INSERT INTO `+Schema+`.planted
			(relation, key_column, rls_enabled_before, rls_forced_before, allow_policy, policy_hash, function_hash)
			VALUES ($1::oid, $2, $3, $4, $5, '', '')`,
			st.oid, st.keyColumn, st.rlsEnabled, st.rlsForced, allowPolicy); err != nil {
			return nil, fmt.Errorf("record the table: %w", err)
		}
	}
	for _, c := range out.Canaries {
		if _, err := tx.Exec(ctx, `INSERT INTO `+Schema+`.canary (relation, key) VALUES ($1::oid, $2)`,
			st.oid, c.Key); err != nil {
			return nil, fmt.Errorf("record canary %s: %w", c.ID, err)
		}
	}
	for _, r := range opts.Readers {
		id := pgx.Identifier{r}.Sanitize()
		if _, err := tx.Exec(ctx, `GRANT USAGE ON SCHEMA `+Schema+` TO `+id+`;
			GRANT SELECT ON `+Schema+`.planted TO `+id); err != nil {
			return nil, fmt.Errorf("grant the tamper check's reads to %s: %w", r, err)
		}
	}
	var keys []string
	if err := tx.QueryRow(ctx, `SELECT array_agg(key ORDER BY key) FROM `+Schema+`.canary WHERE relation = $1::oid`,
		st.oid).Scan(&keys); err != nil {
		return nil, fmt.Errorf("read the canary keys: %w", err)
	}
	if _, err := tx.Exec(ctx, policySQL(st, keys)); err != nil {
		return nil, fmt.Errorf("create the canary policy: %w", err)
	}
	if _, err := tx.Exec(ctx, `ALTER TABLE `+st.ident+` ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY`); err != nil {
		return nil, fmt.Errorf("enable row level security: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE `+Schema+`.planted SET policy_hash = `+policyHashSQL+`,
		function_hash = `+FunctionHashSQL+` WHERE relation = $1::oid`, st.oid); err != nil {
		return nil, fmt.Errorf("record the definitions: %w", err)
	}
	// Again before commit: the schema may have appeared between the check and
	// CREATE SCHEMA IF NOT EXISTS, or default privileges may have granted CREATE
	// on the new one. A failure rolls everything back.
	if err := ownership.Check(ctx, tx, Schema); err != nil {
		return nil, err
	}
	for i := range out.Canaries {
		out.Canaries[i].Created = opts.Now().UTC().Format(time.RFC3339)
	}
	return out, nil
}

// prepareTx makes the catalog text this transaction reads and writes independent of
// the session's search_path, and bounds the wait for the table lock.
func prepareTx(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SET LOCAL search_path = pg_catalog, pg_temp; SET LOCAL lock_timeout = '5s'`); err != nil {
		return fmt.Errorf("set up the transaction: %w", err)
	}
	return nil
}

// lockTable resolves table, takes its ACCESS EXCLUSIVE lock and reads its state.
func lockTable(ctx context.Context, tx pgx.Tx, table string) (*tableState, error) {
	var parts []string
	if err := tx.QueryRow(ctx, `SELECT parse_ident($1)`, table).Scan(&parts); err != nil {
		return nil, fmt.Errorf("table name %q: %w", table, err)
	}
	if len(parts) != 2 {
		return nil, fmt.Errorf("table name %q: want schema.table", table)
	}
	st := &tableState{ident: pgx.Identifier(parts).Sanitize()}
	if _, err := tx.Exec(ctx, `LOCK TABLE `+st.ident+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		return nil, fmt.Errorf("lock the table: %w", err)
	}
	var relkind string
	err := tx.QueryRow(ctx, `
		SELECT c.oid, c.oid::regclass::text, r.rolname::text, c.relrowsecurity,
			c.relforcerowsecurity, c.relkind::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			JOIN pg_roles r ON r.oid = c.relowner
		WHERE n.nspname = $1 AND c.relname = $2`, parts[0], parts[1]).
		Scan(&st.oid, &st.name, &st.owner, &st.rlsEnabled, &st.rlsForced, &relkind)
	if err != nil {
		return nil, fmt.Errorf("read the table: %w", err)
	}
	if relkind != "r" && relkind != "p" {
		return nil, fmt.Errorf("%s is not a table (relkind %s)", st.name, relkind)
	}
	var keyCols []string
	var keyTypes []string
	err = tx.QueryRow(ctx, `
		SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}'),
			coalesce(array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum), '{}')
		FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
		WHERE i.indrelid = $1::oid AND i.indisprimary`, st.oid).Scan(&keyCols, &keyTypes)
	if err != nil {
		return nil, fmt.Errorf("read the primary key: %w", err)
	}
	if len(keyCols) != 1 {
		return nil, fmt.Errorf("%s has %d primary key columns: canaries need a single-column primary key", st.name, len(keyCols))
	}
	st.keyColumn, st.keyType = keyCols[0], keyTypes[0]
	return st, nil
}

// decideAllowPolicy says whether the canary policy needs a permissive companion, and
// refuses the cases where arming row security would change who sees what.
//
// The canary policy is RESTRICTIVE: restrictive policies are ANDed with everything
// else, so one that is true for every row takes nothing away; a permissive one would
// be ORed with the existing permissive policies and widen access. But with row security
// on, a row is visible only if at least one permissive policy lets it through:
//   - row security off and no policies: every role saw every row; a permissive
//     USING (true) policy for PUBLIC keeps it so.
//   - row security off but policies defined: enabling it would bring those dormant
//     policies into force. Refused.
//   - row security on, not forced: FORCE subjects the owner to the policies, which it
//     bypassed. Existing restrictive policies would then filter the owner's rows:
//     refused. Otherwise a permissive USING (true) policy for the owner role (and its
//     members, who bypassed too) keeps the owner's view whole.
//   - on and forced: the canary policy alone.
func decideAllowPolicy(ctx context.Context, tx pgx.Tx, st *tableState) (bool, error) {
	var names []string
	var restrictive []string
	err := tx.QueryRow(ctx, `
		SELECT coalesce(array_agg(polname::text ORDER BY polname), '{}'),
			coalesce(array_agg(polname::text ORDER BY polname) FILTER (WHERE NOT polpermissive), '{}')
		FROM pg_policy WHERE polrelid = $1::oid`, st.oid).Scan(&names, &restrictive)
	if err != nil {
		return false, fmt.Errorf("read the table's policies: %w", err)
	}
	for _, n := range names {
		if n == PolicyName || n == AllowPolicyName {
			return false, fmt.Errorf("%s already has a policy named %s but no canary is recorded for it: drop the policy or plant in another table", st.name, n)
		}
	}
	switch {
	case !st.rlsEnabled && len(names) == 0:
		return true, nil
	case !st.rlsEnabled:
		return false, fmt.Errorf("%s has row level security disabled but defines policies (%s): enabling it for the canary would bring them into force; enable row level security yourself first, or drop them",
			st.name, strings.Join(names, ", "))
	case !st.rlsForced && len(restrictive) > 0:
		return false, fmt.Errorf("%s has restrictive policies (%s) that its owner bypasses: forcing row level security for the canary would apply them to the owner; force it yourself first if that is intended",
			st.name, strings.Join(restrictive, ", "))
	case !st.rlsForced:
		return true, nil
	default:
		return false, nil
	}
}

func createAllowPolicy(ctx context.Context, tx pgx.Tx, st *tableState) error {
	to := "PUBLIC"
	if st.rlsEnabled {
		to = pgx.Identifier{st.owner}.Sanitize()
	}
	_, err := tx.Exec(ctx, `CREATE POLICY `+AllowPolicyName+` ON `+st.ident+
		` AS PERMISSIVE FOR ALL TO `+to+` USING (true) WITH CHECK (true)`)
	if err != nil {
		return fmt.Errorf("create the permissive policy: %w", err)
	}
	return nil
}

// policySQL is the canary policy. For an ordinary row the first operand is true and the
// function is never called (OR stops there; the planner also puts the cheaper operand
// first); for a canary row the function is called, emits its message and returns true.
// WITH CHECK (true): a new row version is no read, and checking it would report an
// UPDATE of a canary row twice.
func policySQL(st *tableState, keys []string) string {
	col := pgx.Identifier{st.keyColumn}.Sanitize()
	return fmt.Sprintf(`CREATE POLICY %s ON %s AS RESTRICTIVE FOR ALL TO PUBLIC
		USING (%s <> ALL (%s::%s[]) OR %s.%s(%d::oid::regclass, %s::text))
		WITH CHECK (true)`,
		PolicyName, st.ident, col, quoteLiteral(arrayLiteral(keys)), st.keyType,
		Schema, FunctionName, st.oid, col)
}

// checkDomain accepts a plain DNS name: the domain ends up in every canary address.
var domainRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)

func checkDomain(d string) error {
	if d == "" {
		return errors.New("a canary mail domain is required: one whose mail you watch and that no real person uses (see docs/canary.md)")
	}
	if !domainRE.MatchString(d) {
		return fmt.Errorf("domain %q: want a DNS name such as mail.example.com", d)
	}
	return nil
}

// randomSecret is the password nobody will ever know: it is hashed and forgotten.
func randomSecret() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func hashSecret(cost int) (string, error) {
	secret, err := randomSecret()
	if err != nil {
		return "", err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(secret), cost)
	if err != nil {
		return "", fmt.Errorf("bcrypt: %w", err)
	}
	return string(h), nil
}
