package canary

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// List returns every planted canary, ordered by table and key; none (and no error)
// when nothing was ever planted. It only reads the registry, never the tables, so it
// trips nothing.
func List(ctx context.Context, conn *pgx.Conn) ([]Canary, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('`+Schema+`.canary') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("list canaries: %w", err)
	}
	if !exists {
		return nil, nil
	}
	rows, err := conn.Query(ctx, `
		SELECT format('%I.%I', n.nspname, c.relname), k.key, k.created_at
		FROM `+Schema+`.canary k JOIN pg_class c ON c.oid = k.relation JOIN pg_namespace n ON n.oid = c.relnamespace
		ORDER BY 1, length(k.key), k.key`)
	if err != nil {
		return nil, fmt.Errorf("list canaries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Canary, error) {
		var c Canary
		var created time.Time
		err := r.Scan(&c.Relation, &c.Key, &created)
		c.ID = canaryID(c.Relation, c.Key)
		c.Created = created.UTC().Format(time.RFC3339)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("list canaries: %w", err)
	}
	return out, nil
}

// Removed is what Remove did.
type Removed struct {
	Relation string
	// Rows is the number of canary rows deleted from the table.
	Rows int64
	// RegistryDropped is true when this was the last table with canaries: the schema,
	// the registry and the function are gone too.
	RegistryDropped bool
}

// Remove undoes Plant for table, in one transaction: drops the canary policy (first,
// so that deleting the canary rows does not trip it), deletes the canary rows, drops
// the permissive policy if Plant added it, restores row level security's ENABLE and
// FORCE flags to what they were before the first Plant, and forgets the table. When no
// table has canaries left, it drops the function and the registry schema. It returns
// ErrNotPlanted (wrapped) for a table without canaries.
func Remove(ctx context.Context, conn *pgx.Conn, table string) (*Removed, error) {
	var out *Removed
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		out, err = remove(ctx, tx, table)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("remove canaries from %s: %w", table, err)
	}
	return out, nil
}

func remove(ctx context.Context, tx pgx.Tx, table string) (*Removed, error) {
	if err := prepareTx(ctx, tx); err != nil {
		return nil, err
	}
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('`+Schema+`.planted') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("read the registry: %w", err)
	}
	if !exists {
		return nil, ErrNotPlanted
	}
	st, err := lockTable(ctx, tx, table)
	if err != nil {
		return nil, err
	}
	var enabledBefore, forcedBefore, allowPolicy bool
	var keyColumn string
	err = tx.QueryRow(ctx, `SELECT key_column::text, rls_enabled_before, rls_forced_before, allow_policy
		FROM `+Schema+`.planted WHERE relation = $1::oid`, st.oid).Scan(&keyColumn, &enabledBefore, &forcedBefore, &allowPolicy)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotPlanted
	}
	if err != nil {
		return nil, fmt.Errorf("read the registry: %w", err)
	}
	out := &Removed{Relation: st.name}
	if _, err := tx.Exec(ctx, `DROP POLICY IF EXISTS `+PolicyName+` ON `+st.ident); err != nil {
		return nil, fmt.Errorf("drop the canary policy: %w", err)
	}
	key := pgx.Identifier{keyColumn}.Sanitize()
	tag, err := tx.Exec(ctx, `DELETE FROM `+st.ident+` WHERE `+key+` = ANY ((SELECT array_agg(key) FROM `+
		Schema+`.canary WHERE relation = $1::oid)::`+st.keyType+`[])`, st.oid)
	if err != nil {
		return nil, fmt.Errorf("delete the canary rows: %w", err)
	}
	out.Rows = tag.RowsAffected()
	if allowPolicy {
		if _, err := tx.Exec(ctx, `DROP POLICY IF EXISTS `+AllowPolicyName+` ON `+st.ident); err != nil {
			return nil, fmt.Errorf("drop the permissive policy: %w", err)
		}
	}
	alter := []string{}
	if enabledBefore {
		alter = append(alter, "ENABLE ROW LEVEL SECURITY")
	} else {
		alter = append(alter, "DISABLE ROW LEVEL SECURITY")
	}
	if forcedBefore {
		alter = append(alter, "FORCE ROW LEVEL SECURITY")
	} else {
		alter = append(alter, "NO FORCE ROW LEVEL SECURITY")
	}
	if _, err := tx.Exec(ctx, `ALTER TABLE `+st.ident+` `+alter[0]+`, `+alter[1]); err != nil {
		return nil, fmt.Errorf("restore row level security: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM `+Schema+`.planted WHERE relation = $1::oid`, st.oid); err != nil {
		return nil, fmt.Errorf("forget the table: %w", err)
	}
	var left int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+Schema+`.planted`).Scan(&left); err != nil {
		return nil, fmt.Errorf("read the registry: %w", err)
	}
	if left == 0 {
		// CASCADE is not needed and would hide a surprise: anything else that came to
		// depend on the function (another policy) makes the drop fail instead.
		if _, err := tx.Exec(ctx, `DROP FUNCTION IF EXISTS `+Schema+`.`+FunctionName+`(regclass, text);
			DROP TABLE `+Schema+`.canary, `+Schema+`.planted; DROP SCHEMA `+Schema); err != nil {
			return nil, fmt.Errorf("drop the registry: %w", err)
		}
		out.RegistryDropped = true
	}
	return out, nil
}
