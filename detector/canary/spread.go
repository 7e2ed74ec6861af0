package canary

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"

	"github.com/jackc/pgx/v5"
)

// A canary placed after every real row is the last one a sweep in key order reaches and
// the first one a "newest users" page shows. The spreader places each of a plant's n
// canaries in its own n-th of the table's orders instead, where the key allows it:
//
//   - an integer key takes an unused value (a gap left by a rolled-back insert or a
//     deleted row) inside its slice of the range of existing keys, the newest 5 % of
//     the range left out, below the sequence
//     behind the key so that the sequence never hands it out; a table without gaps, or
//     a key whose default is not a sequence, keeps today's place (the default, or
//     max + 1);
//   - a uuid key of version 7 (time-ordered) gets a version 7 uuid whose time falls in
//     its slice of the existing keys' times (the newest 5 % left out); other uuids are
//     random, hence spread;
//   - the email column's value sorts, in the column's collation, into its slice of the
//     existing addresses (the statistics' histogram, or the addresses themselves in a
//     small table), when a plausible persona does.
//
// The timestamps of a canary are copied from a real row (its neighbour in key order
// when the key was placed, a random one otherwise), so that they are as old, and as
// consistent with each other, as the real rows'.
type spreader struct {
	st  *tableState
	n   int
	rng *mrand.Rand
	// reltuples is the planner's row count of the table; -1 when never analyzed.
	reltuples float64

	key    keyOrder
	emails []string // n+1 slice bounds of the email column, in its order; nil: not spread
	email  *column
	// username is the user name column, whose value is the address's local part.
	username *column
	// emailCollation is the COLLATE clause of the email column's collation.
	emailCollation string
	times          []column // the columns a donor row gives values to
}

// keyOrder is what the spreader knows of the primary key's order.
type keyOrder struct {
	kind     string // "int", "uuid7" or "" (not spread)
	lo, hi   int64  // int: the range explicit keys are taken from; uuid7: milliseconds
	identity bool   // GENERATED ALWAYS AS IDENTITY: explicit values need OVERRIDING
}

// placement is where one canary goes and what it copies.
type placement struct {
	key   string            // an explicit primary key value, as text; "" for the default
	donor map[string]string // date/time column name → a real row's value, as text
	p     persona
}

// maxSmallTable bounds the tables whose addresses are read for the email slices when
// the statistics have no histogram: Plant holds an exclusive lock on the table.
const maxSmallTable = 100_000

func newSpreader(ctx context.Context, tx pgx.Tx, st *tableState, cols []column, n int) (*spreader, error) {
	s := &spreader{st: st, n: n, rng: mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))}
	if err := tx.QueryRow(ctx, `SELECT reltuples::float8 FROM pg_class WHERE oid = $1::oid`, st.oid).Scan(&s.reltuples); err != nil {
		return nil, fmt.Errorf("read the table's size: %w", err)
	}
	for i := range cols {
		switch cols[i].role {
		case roleEmail:
			s.email = &cols[i]
		case roleUsername:
			s.username = &cols[i]
		case roleCreated, roleTime:
			s.times = append(s.times, cols[i])
		}
	}
	var err error
	if s.key, err = readKeyOrder(ctx, tx, st); err != nil {
		return nil, err
	}
	if s.email != nil {
		if s.emails, s.emailCollation, err = readEmailSlices(ctx, tx, st, s.email, n, s.reltuples); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func readKeyOrder(ctx context.Context, tx pgx.Tx, st *tableState) (keyOrder, error) {
	var (
		base, identity string
		hasDefault     bool
		seq            *string
	)
	err := tx.QueryRow(ctx, `
		SELECT bt.typname::text, a.attidentity::text, a.atthasdef, pg_get_serial_sequence($1::oid::regclass::text, a.attname)
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
			JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
		WHERE a.attrelid = $1::oid AND a.attname = $2`, st.oid, st.keyColumn).Scan(&base, &identity, &hasDefault, &seq)
	if err != nil {
		return keyOrder{}, fmt.Errorf("read the primary key: %w", err)
	}
	k := keyOrder{identity: identity == "a"}
	col := pgx.Identifier{st.keyColumn}.Sanitize()
	switch base {
	case "int2", "int4", "int8":
		// Explicit keys only below what the sequence has handed out, or without a
		// default at all: a default of another kind may hand out any value.
		if hasDefault && seq == nil {
			return keyOrder{}, nil
		}
		var lo, hi, last *int64
		q := `SELECT min(` + col + `)::bigint, max(` + col + `)::bigint, NULL::bigint FROM ` + st.ident
		if seq != nil {
			q = `SELECT min(` + col + `)::bigint, max(` + col + `)::bigint, pg_sequence_last_value($1::regclass) FROM ` + st.ident
		}
		args := []any{}
		if seq != nil {
			args = append(args, *seq)
		}
		if err := tx.QueryRow(ctx, q, args...).Scan(&lo, &hi, &last); err != nil {
			return keyOrder{}, fmt.Errorf("read the key range: %w", err)
		}
		if lo == nil || (seq != nil && last == nil) {
			return keyOrder{}, nil
		}
		k.kind, k.lo, k.hi = "int", *lo, *hi
		if last != nil {
			k.hi = min(k.hi, *last)
		}
	case "uuid":
		var lo, hi *string
		if err := tx.QueryRow(ctx, `SELECT (SELECT `+col+`::text FROM `+st.ident+` ORDER BY 1 LIMIT 1),
			(SELECT `+col+`::text FROM `+st.ident+` ORDER BY `+col+` DESC LIMIT 1)`).Scan(&lo, &hi); err != nil {
			return keyOrder{}, fmt.Errorf("read the key range: %w", err)
		}
		if lo == nil || hi == nil {
			return keyOrder{}, nil
		}
		tlo, ok1 := uuid7Millis(*lo)
		thi, ok2 := uuid7Millis(*hi)
		if ok1 && ok2 {
			k.kind, k.lo, k.hi = "uuid7", tlo, thi
		}
	}
	return k, nil
}

// readEmailSlices returns the n+1 bounds that cut the email column's values into n
// slices of equal counts, and the COLLATE clause to compare in its order; nil bounds
// when neither the statistics nor a small table give them.
func readEmailSlices(ctx context.Context, tx pgx.Tx, st *tableState, email *column, n int, reltuples float64) ([]string, string, error) {
	var (
		collation string
		hist      []string
	)
	err := tx.QueryRow(ctx, `
		SELECT format('COLLATE %I.%I', cn.nspname, co.collname),
			(SELECT s.histogram_bounds::text::text[] FROM pg_stats s
				WHERE s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname
				ORDER BY s.inherited DESC LIMIT 1)
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			JOIN pg_collation co ON co.oid = a.attcollation JOIN pg_namespace cn ON cn.oid = co.collnamespace
		WHERE a.attrelid = $1::oid AND a.attname = $2`, st.oid, email.name).Scan(&collation, &hist)
	if err != nil {
		return nil, "", fmt.Errorf("read the email column's order: %w", err)
	}
	if len(hist) < 2 && reltuples <= maxSmallTable {
		// reltuples is -1 for a table never analyzed: a new one, small.
		fractions := make([]float64, 0, n+1)
		for i := range n + 1 {
			fractions = append(fractions, float64(i)/float64(n))
		}
		err := tx.QueryRow(ctx, `SELECT coalesce(percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY `+email.ident+` `+collation+`), '{}')
			FROM `+st.ident+` WHERE `+email.ident+` IS NOT NULL`, fractions).Scan(&hist)
		if err != nil {
			return nil, "", fmt.Errorf("read the email column's order: %w", err)
		}
	}
	if len(hist) < 2 {
		return nil, collation, nil
	}
	bounds := make([]string, n+1)
	for i := range n + 1 {
		bounds[i] = hist[i*(len(hist)-1)/n]
	}
	return bounds, collation, nil
}

// place decides the i-th canary's key, persona and donor row.
func (s *spreader) place(ctx context.Context, tx pgx.Tx, i int, gen *personas, domain string) (placement, error) {
	var pl placement
	var err error
	switch s.key.kind {
	case "int":
		pl.key, err = s.unusedInt(ctx, tx, i)
	case "uuid7":
		pl.key, err = s.uuid7(i)
	}
	if err != nil {
		return placement{}, err
	}
	if pl.p, err = s.persona(ctx, tx, i, gen, domain); err != nil {
		return placement{}, err
	}
	if pl.donor, err = s.donor(ctx, tx, pl.key); err != nil {
		return placement{}, err
	}
	return pl, nil
}

// newest is the part of the key range that is left to real rows: the top of an
// increasing key is where "newest members" pages look.
const newest = 0.05

// slice returns the bounds of the i-th of n equal slices of [lo, hi] without its
// newest part.
func slice(lo, hi int64, i, n int) (int64, int64) {
	width := float64(hi-lo) * (1 - newest) / float64(n)
	return lo + int64(width*float64(i)), lo + int64(width*float64(i+1))
}

// unusedInt returns an unused key in the i-th slice of the key range, "" when the slice
// has none.
func (s *spreader) unusedInt(ctx context.Context, tx pgx.Tx, i int) (string, error) {
	from, to := slice(s.key.lo, s.key.hi, i, s.n)
	if to-from < 2 {
		return "", nil
	}
	start := from + 1 + s.rng.Int64N(to-from-1)
	col := pgx.Identifier{s.st.keyColumn}.Sanitize()
	// The first unused value at or after a point: the point itself, or the value after
	// the first key followed by a gap.
	q := `SELECT g FROM (SELECT $1::bigint AS g) p
			WHERE $1 < $2 AND NOT EXISTS (SELECT 1 FROM ` + s.st.ident + ` WHERE ` + col + ` = $1)
		UNION ALL
		(SELECT k + 1 FROM (SELECT ` + col + `::bigint AS k, lead(` + col + `::bigint) OVER (ORDER BY ` + col + `) AS nxt
			FROM ` + s.st.ident + ` WHERE ` + col + ` >= $1 AND ` + col + ` < $2) g WHERE nxt > k + 1 LIMIT 1)
		LIMIT 1`
	for _, r := range [][2]int64{{start, to}, {from + 1, start}} {
		var key int64
		err := tx.QueryRow(ctx, q, r[0], r[1]).Scan(&key)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("look for an unused key: %w", err)
		}
		return fmt.Sprint(key), nil
	}
	return "", nil
}

// uuid7 returns a version 7 uuid whose time falls in the i-th slice of the keys' times.
func (s *spreader) uuid7(i int) (string, error) {
	from, to := slice(s.key.lo, s.key.hi, i, s.n)
	ms := from
	if to > from {
		ms += s.rng.Int64N(to - from)
	}
	var b [16]byte
	if _, err := rand.Read(b[6:]); err != nil {
		return "", fmt.Errorf("random uuid: %w", err)
	}
	for j := range 6 {
		b[j] = byte(ms >> (8 * (5 - j)))
	}
	b[6] = 0x70 | b[6]&0x0f
	b[8] = 0x80 | b[8]&0x3f
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// uuid7Millis returns the time of a version 7 uuid in text form.
func uuid7Millis(u string) (int64, bool) {
	h := strings.ReplaceAll(u, "-", "")
	if len(h) != 32 || h[12] != '7' {
		return 0, false
	}
	b, err := hex.DecodeString(h[:12])
	if err != nil {
		return 0, false
	}
	var ms int64
	for _, x := range b {
		ms = ms<<8 | int64(x)
	}
	return ms, true
}

// candidates is how many personas are tried for an email slice.
const candidates = 300

// persona returns a persona whose address sorts into the i-th email slice and is not
// taken; any new persona when none of the candidates does.
func (s *spreader) persona(ctx context.Context, tx pgx.Tx, i int, gen *personas, domain string) (persona, error) {
	if s.emails == nil {
		return gen.next(domain), nil
	}
	ps := make([]persona, candidates)
	emails := make([]string, candidates)
	for j := range ps {
		ps[j] = gen.candidate(domain)
		emails[j] = ps[j].email
	}
	// The first candidate in the slice whose address (and user name) is free: the
	// slice's candidates in order, unchecked (OFFSET 0 keeps the check out), then
	// checked one at a time until one passes.
	taken := `t.` + s.email.ident + ` = c.e`
	if s.username != nil {
		taken += ` OR t.` + s.username.ident + ` = split_part(c.e, '@', 1)`
	}
	var pick int
	err := tx.QueryRow(ctx, `SELECT n::int FROM (SELECT e, n FROM unnest($1::text[]) WITH ORDINALITY AS u(e, n)
			WHERE e `+s.emailCollation+` >= $2 AND e `+s.emailCollation+` < $3 ORDER BY n OFFSET 0) c
		WHERE NOT EXISTS (SELECT 1 FROM `+s.st.ident+` t WHERE `+taken+`) LIMIT 1`,
		emails, s.emails[i], s.emails[i+1]).Scan(&pick)
	if errors.Is(err, pgx.ErrNoRows) {
		return gen.next(domain), nil
	}
	if err != nil {
		return persona{}, fmt.Errorf("place a canary address: %w", err)
	}
	return gen.take(ps[pick-1]), nil
}

// donor returns the date/time values of a real row: the neighbour below key (above it
// when there is none) when the key was placed, a random row otherwise.
func (s *spreader) donor(ctx context.Context, tx pgx.Tx, key string) (map[string]string, error) {
	if len(s.times) == 0 {
		return nil, nil
	}
	sel := make([]string, len(s.times))
	for j, c := range s.times {
		sel[j] = c.ident + `::text`
	}
	col := pgx.Identifier{s.st.keyColumn}.Sanitize()
	from := `SELECT ` + strings.Join(sel, ", ") + ` FROM ` + s.st.ident
	var queries []string
	var args []any
	switch {
	case key != "":
		queries = []string{
			from + ` WHERE ` + col + ` < $1::` + s.st.keyType + ` ORDER BY ` + col + ` DESC LIMIT 1`,
			from + ` WHERE ` + col + ` > $1::` + s.st.keyType + ` ORDER BY ` + col + ` LIMIT 1`,
		}
		args = []any{key}
	case s.reltuples > maxSmallTable:
		// About 200 rows' worth of pages, one of their rows at random: a big table is
		// not read whole under Plant's lock.
		queries = []string{from + ` TABLESAMPLE SYSTEM ($1) ORDER BY random() LIMIT 1`}
		args = []any{float32(max(100*200/s.reltuples, 0.001))}
	default:
		queries = []string{from + ` ORDER BY random() LIMIT 1`}
	}
	vals := make([]*string, len(s.times))
	dest := make([]any, len(vals))
	for j := range vals {
		dest[j] = &vals[j]
	}
	for _, q := range queries {
		err := tx.QueryRow(ctx, q, args...).Scan(dest...)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read a real row's timestamps: %w", err)
		}
		out := make(map[string]string, len(vals))
		for j, v := range vals {
			if v != nil {
				out[s.times[j].name] = *v
			}
		}
		return out, nil
	}
	return nil, nil
}
